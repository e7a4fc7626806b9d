//! `.pth` files made byte by byte for the reader's tests: protocol-2 pickles of a state_dict and
//! zip archives whose headers say whatever a test needs (sizes, compression, encryption), with
//! decompression bombs built without inflating them.
use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};

/// A tensor of a state_dict pickle: a view (`offset`, `size`, `stride`) of float storage `key`
/// of `numel` elements.
pub struct View<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub numel: i64,
    pub offset: i64,
    pub size: &'a [i64],
    pub stride: &'a [i64],
}

/// BINUNICODE.
pub fn text(s: &str) -> Vec<u8> {
    [&b"X"[..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat()
}

/// LONG1 of 8 bytes.
pub fn int(i: i64) -> Vec<u8> {
    [&[0x8a, 8][..], &i.to_le_bytes()].concat()
}

/// MARK, the integers, TUPLE.
fn tuple(xs: &[i64]) -> Vec<u8> {
    let mut b = vec![b'('];
    xs.iter().for_each(|&x| b.extend(int(x)));
    b.push(b't');
    b
}

/// The pickle `torch.save({name: tensor, ...})` writes for float tensors, without the memo.
pub fn state_dict(views: &[View]) -> Vec<u8> {
    let mut b = b"\x80\x02}(".to_vec();
    for v in views {
        b.extend(text(v.name));
        b.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        b.extend(text("storage"));
        b.extend(b"ctorch\nFloatStorage\n");
        b.extend(text(v.key));
        b.extend(text("cpu"));
        b.extend(int(v.numel));
        b.extend(b"tQ");
        b.extend(int(v.offset));
        b.extend(tuple(v.size));
        b.extend(tuple(v.stride));
        b.extend(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    b.extend(b"u.");
    b
}

/// Little-endian float32 bytes.
pub fn floats(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One zip entry as it lies in the archive.
pub struct Entry {
    pub name: String,
    /// 0: stored, 8: deflated.
    pub method: u16,
    /// The general-purpose flags (bit 0: encrypted).
    pub flags: u16,
    /// The bytes in the archive (compressed, for a deflated entry).
    pub data: Vec<u8>,
    /// The uncompressed size the headers declare.
    pub size: u64,
    pub crc: u32,
    /// The extra field of both headers (a zip64 record is added for sizes of 4 GiB and more).
    pub extra: Vec<u8>,
}

pub fn crc(bytes: &[u8]) -> u32 {
    let mut c = Crc::new();
    c.update(bytes);
    c.sum()
}

impl Entry {
    pub fn stored(name: &str, bytes: &[u8]) -> Entry {
        Entry {
            name: name.into(),
            method: 0,
            flags: 0,
            data: bytes.to_vec(),
            size: bytes.len() as u64,
            crc: crc(bytes),
            extra: Vec::new(),
        }
    }

    pub fn deflated(name: &str, bytes: &[u8]) -> Entry {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
        e.write_all(bytes).unwrap();
        Entry {
            method: 8,
            data: e.finish().unwrap(),
            ..Entry::stored(name, bytes)
        }
    }

    /// A deflated entry of `prefix`, `mib` MiB of the byte `fill`, then `suffix`: a
    /// decompression bomb about a thousandth of its size, made by repeating one compressed MiB
    /// (a run, flushed to a byte boundary, refers to nothing before it).
    pub fn bomb(name: &str, prefix: &[u8], fill: u8, mib: u64, suffix: &[u8]) -> Entry {
        let run = vec![fill; 1 << 20];
        let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
        e.write_all(&run).unwrap();
        e.flush().unwrap(); // a sync flush: byte-aligned, not the final block
        let chunk = e.get_ref().clone();
        // A stored block: BFINAL, BTYPE 00, then LEN and its complement.
        let stored = |last: bool, b: &[u8]| {
            let n = b.len() as u16;
            [&[last as u8][..], &n.to_le_bytes(), &(!n).to_le_bytes(), b].concat()
        };
        let mut data = stored(false, prefix);
        let mut c = Crc::new();
        c.update(prefix);
        for _ in 0..mib {
            data.extend(&chunk);
            c.update(&run);
        }
        data.extend(stored(true, suffix));
        c.update(suffix);
        Entry {
            name: name.into(),
            method: 8,
            flags: 0,
            data,
            size: prefix.len() as u64 + (mib << 20) + suffix.len() as u64,
            crc: c.sum(),
            extra: Vec::new(),
        }
    }
}

/// The archive of `entries`: local headers and data, the central directory, its end record.
pub fn zip(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let big = e.size >= u32::MAX as u64;
        let mut extra = e.extra.clone();
        if big {
            extra.extend(1u16.to_le_bytes());
            extra.extend(8u16.to_le_bytes());
            extra.extend(e.size.to_le_bytes());
        }
        let size32 = if big { u32::MAX } else { e.size as u32 };
        // From the version needed to the extra field's length: common to both headers.
        let mut common = Vec::new();
        common.extend(if big { 45u16 } else { 20u16 }.to_le_bytes());
        common.extend(e.flags.to_le_bytes());
        common.extend(e.method.to_le_bytes());
        common.extend([0, 0, 0x21, 0]); // 1980-01-01 00:00
        common.extend(e.crc.to_le_bytes());
        common.extend((e.data.len() as u32).to_le_bytes());
        common.extend(size32.to_le_bytes());
        common.extend((e.name.len() as u16).to_le_bytes());
        common.extend((extra.len() as u16).to_le_bytes());
        out.extend(0x04034b50u32.to_le_bytes());
        out.extend(&common);
        out.extend(e.name.as_bytes());
        out.extend(&extra);
        out.extend(&e.data);
        central.extend(0x02014b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // made by
        central.extend(&common);
        central.extend([0; 10]); // comment length, disk, internal and external attributes
        central.extend(offset.to_le_bytes());
        central.extend(e.name.as_bytes());
        central.extend(&extra);
    }
    let (at, len) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x06054b50u32.to_le_bytes());
    out.extend([0; 4]); // disk numbers
    let n = entries.len() as u16;
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend(len.to_le_bytes());
    out.extend(at.to_le_bytes());
    out.extend([0; 2]); // comment length
    out
}

/// A `.pth` holding `pickle` as `archive/data.pkl` and the storages `(key, bytes)`, stored as
/// `torch.save` stores them.
pub fn pth(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut entries = vec![Entry::stored("archive/data.pkl", pickle)];
    for (key, bytes) in storages {
        entries.push(Entry::stored(&format!("archive/data/{key}"), bytes));
    }
    zip(&entries)
}
