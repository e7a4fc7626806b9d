//! Reading the tensors of a file PyTorch wrote with `torch.save(model.state_dict(), path)`:
//! the zip format (PyTorch ≥ 1.6), `<archive>/data.pkl` plus one raw little-endian file per
//! storage under `<archive>/data/`. libtorch's own unpickler turns the `OrderedDict` of a Python
//! state_dict into `None`, so this reads the pickle itself: a small stack machine for the
//! opcodes `torch.save` emits for a dict of tensors (protocol 2), which rebuilds each tensor
//! from its storage, offset, size and stride (`torch._utils._rebuild_tensor_v2`) and refuses
//! anything else with an error naming it. Nothing in the file is executed.
//!
//! A checkpoint is a file people download, so what reading one may cost is bounded by the file
//! and by fixed limits, each checked before the work it bounds: the pickle is at most
//! [`MAX_PICKLE_BYTES`], its containers nest at most [`MAX_DEPTH`] deep, its stack holds at most
//! [`MAX_STACK`] values, and the values it builds take at most [`MAX_PICKLE_MEMORY`], a memo
//! fetch counted as a copy of what it fetches (so a "billion laughs" of doubling memo
//! references stops after a few doublings). An archive entry is inflated only up to the size
//! its header declares, which for a storage must be the size its tensors claim, and everything
//! inflated from the archive or copied into tensors together may be at most [`MAX_EXPANSION`]
//! times the file's size plus [`EXPANSION_ALLOWANCE`]: a decompression bomb is refused before
//! it is inflated. Encrypted entries are refused (the zip crate would panic on some).
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// The largest `data.pkl` read. A ResNet-50 state_dict's is 42 KB (about 130 bytes a tensor).
const MAX_PICKLE_BYTES: u64 = 16 << 20;
/// How deep the pickle's containers may nest. A state_dict's nest 3 deep (the dict, a tensor's
/// arguments, its size); Python's own pickler gives up near 1000 (its recursion limit).
const MAX_DEPTH: usize = 1000;
/// The most values the pickle's stack may hold at once. Python's pickler adds a dict's items
/// 1000 at a time, so a state_dict's stack holds a few thousand at most.
const MAX_STACK: usize = 100_000;
/// What the values the pickle builds may take, in bytes, counted as they are built, a memo store
/// or fetch as a copy of its value: some 840,000 values (a value's slot is 80 bytes). A
/// ResNet-50 state_dict's take 1.4 MB (`torch.save` memoizes every value, so about 4.4 KB a
/// tensor): this allows some 14,000 tensors, where the models ipirm reads have at most 326.
const MAX_PICKLE_MEMORY: usize = 64 << 20;
/// Entries inflated and tensors copied out of a file may take at most this many times its size,
/// plus [`EXPANSION_ALLOWANCE`]. `torch.save` stores its entries uncompressed, so a checkpoint
/// takes about twice its size (each storage, then its tensors); a re-zipped one deflates floats
/// by ~10%. A deflate stream can inflate 1000-fold.
const MAX_EXPANSION: u64 = 16;
/// What any file may inflate to beyond [`MAX_EXPANSION`] times its size: the pickle and small
/// tensors of zeros, which deflate far more than weights.
const EXPANSION_ALLOWANCE: u64 = 64 << 20;
/// The most dimensions a tensor may have (PyTorch's own tensors use a handful).
const MAX_DIMS: usize = 64;

/// A pickled value, as far as a state_dict needs.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(#[allow(dead_code)] bool),
    Int(i64),
    Float(#[allow(dead_code)] f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name`, before it is called.
    Global(String),
    /// A storage named by a persistent id: dtype, archive key, number of elements.
    Storage {
        kind: Kind,
        key: String,
        numel: i64,
    },
    /// A tensor view of a storage.
    Tensor {
        storage: Box<Value>,
        offset: i64,
        size: Vec<i64>,
        stride: Vec<i64>,
    },
    /// The stack mark.
    Mark,
}

fn storage_kind(class: &str) -> Option<Kind> {
    Some(match class {
        "torch.FloatStorage" => Kind::Float,
        "torch.DoubleStorage" => Kind::Double,
        "torch.HalfStorage" => Kind::Half,
        "torch.BFloat16Storage" => Kind::BFloat16,
        "torch.LongStorage" => Kind::Int64,
        "torch.IntStorage" => Kind::Int,
        "torch.ShortStorage" => Kind::Int16,
        "torch.CharStorage" => Kind::Int8,
        "torch.ByteStorage" => Kind::Uint8,
        "torch.BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// A value on the machine's stack or in its memo, with what the limits are checked against:
/// how deep containers nest in it (0 for a value that holds none) and about how many bytes it
/// takes, its own slot and everything it holds.
#[derive(Clone)]
struct Slot {
    value: Value,
    depth: usize,
    bytes: usize,
}

/// What a value takes before what it holds.
const SLOT: usize = std::mem::size_of::<Slot>();

impl Slot {
    /// A value that holds no other value of the pickle: a scalar, a string, a storage, a rebuilt
    /// tensor or an empty container.
    fn leaf(value: Value) -> Slot {
        fn held(v: &Value) -> usize {
            match v {
                Value::Str(s) | Value::Global(s) => s.len(),
                Value::Storage { key, .. } => key.len(),
                Value::Tensor {
                    storage,
                    size,
                    stride,
                    ..
                } => SLOT + held(storage) + 8 * (size.len() + stride.len()),
                _ => 0,
            }
        }
        let depth = match &value {
            Value::Tuple(_) | Value::List(_) | Value::Dict(_) | Value::Tensor { .. } => 1,
            _ => 0,
        };
        let bytes = SLOT + held(&value);
        Slot {
            value,
            depth,
            bytes,
        }
    }
}

/// The nesting depth of a container holding `items`, if within [`MAX_DEPTH`].
fn container_depth(items: &[Slot]) -> PResult<usize> {
    let depth = 1 + items.iter().map(|s| s.depth).max().unwrap_or(0);
    if depth > MAX_DEPTH {
        return Err(format!(
            "containers nested more than {MAX_DEPTH} deep (a state_dict's nest 3 deep)"
        ));
    }
    Ok(depth)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Slot>,
    /// The bytes of every value built so far, each memo store and fetch counted as a copy. It
    /// never decreases, so it bounds what the machine has allocated.
    built: usize,
}

type PResult<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            built: 0,
        }
    }

    fn take(&mut self, n: usize) -> PResult<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("the pickle ends in the middle of an opcode")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn line(&mut self) -> PResult<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("an unterminated GLOBAL")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    /// Counts `bytes` more of values built, refusing past [`MAX_PICKLE_MEMORY`]. Called before
    /// the bytes are allocated.
    fn charge(&mut self, bytes: usize) -> PResult<()> {
        self.built = self.built.saturating_add(bytes);
        if self.built > MAX_PICKLE_MEMORY {
            return Err(format!(
                "values taking more than {} MiB by byte {} (memo references counted as \
                 copies; a ResNet-50 state_dict's take 1.4 MB)",
                MAX_PICKLE_MEMORY >> 20,
                self.pos
            ));
        }
        Ok(())
    }
    /// Pushes `slot`, within [`MAX_STACK`].
    fn push(&mut self, slot: Slot) -> PResult<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!(
                "more than {MAX_STACK} values on the stack by byte {} (a state_dict's stack \
                 holds a few thousand)",
                self.pos
            ));
        }
        self.stack.push(slot);
        Ok(())
    }
    /// Pushes a value that holds no other (see [`Slot::leaf`]).
    fn push_leaf(&mut self, value: Value) -> PResult<()> {
        let slot = Slot::leaf(value);
        self.charge(slot.bytes)?;
        self.push(slot)
    }
    /// Pushes a tuple of `items`, which were counted when they were built: only its own slot is.
    fn push_tuple(&mut self, items: Vec<Slot>) -> PResult<()> {
        let depth = container_depth(&items)?;
        self.charge(SLOT)?;
        let bytes = items.iter().fold(SLOT, |b, s| b.saturating_add(s.bytes));
        self.push(Slot {
            value: Value::Tuple(items.into_iter().map(|s| s.value).collect()),
            depth,
            bytes,
        })
    }
    /// Adds `items` to the list (APPEND, APPENDS) or, as key-value pairs, to the dict (SETITEM,
    /// SETITEMS) on top of the stack.
    fn extend_top(&mut self, items: Vec<Slot>, op: &str) -> PResult<()> {
        let depth = container_depth(&items)?;
        let bytes = items.iter().fold(0usize, |b, s| b.saturating_add(s.bytes));
        let Some(top) = self.stack.last_mut() else {
            return Err(format!("{op} on an empty stack"));
        };
        match (&mut top.value, op) {
            (Value::List(l), "APPEND" | "APPENDS") => l.extend(items.into_iter().map(|s| s.value)),
            (Value::Dict(d), "SETITEM" | "SETITEMS") => {
                if !items.len().is_multiple_of(2) {
                    return Err(format!("{op} with an odd number of items"));
                }
                let mut it = items.into_iter().map(|s| s.value);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            (v, _) => return Err(format!("{op} on a {}", variant_name(v))),
        }
        top.depth = top.depth.max(depth);
        top.bytes = top.bytes.saturating_add(bytes);
        Ok(())
    }
    /// BINPUT, LONG_BINPUT, MEMOIZE: a copy of the top of the stack into memo `i`.
    fn memo_put(&mut self, i: u32, op: &str) -> PResult<()> {
        let bytes = self
            .stack
            .last()
            .map(|s| s.bytes)
            .ok_or_else(|| format!("{op} on an empty stack"))?;
        self.charge(bytes)?;
        let slot = self.stack.last().expect("checked").clone();
        self.memo.insert(i, slot);
        Ok(())
    }
    /// BINGET, LONG_BINGET: a copy of memo `i` onto the stack.
    fn memo_get(&mut self, i: u32, op: &str) -> PResult<()> {
        let bytes = self
            .memo
            .get(&i)
            .map(|s| s.bytes)
            .ok_or_else(|| format!("{op} of unknown memo {i}"))?;
        self.charge(bytes)?;
        let slot = self.memo[&i].clone();
        self.push(slot)
    }

    fn pop(&mut self) -> PResult<Slot> {
        self.stack
            .pop()
            .ok_or_else(|| "a pickle that pops an empty stack".to_string())
    }
    /// The values above the topmost mark, removing the mark.
    fn pop_mark(&mut self) -> PResult<Vec<Slot>> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s.value, Value::Mark))
            .ok_or("a pickle without the mark it needs")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn run(&mut self) -> PResult<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME (protocol 4): a length hint
                }
                b'.' => return Ok(self.pop()?.value),
                b'(' => self.push_leaf(Value::Mark)?,
                b')' => self.push_leaf(Value::Tuple(Vec::new()))?,
                b'}' => self.push_leaf(Value::Dict(Vec::new()))?,
                b']' => self.push_leaf(Value::List(Vec::new()))?,
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push_leaf(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push_leaf(Value::Int(v as i64))?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push_leaf(Value::Int(v as i64))?
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("an integer wider than 64 bits".into());
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push_leaf(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => {
                    let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                    self.push_leaf(Value::Float(f64::from_be_bytes(b)))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.push_leaf(Value::Str(s))?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.push_leaf(Value::Str(s))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_leaf(Value::Global(format!("{module}.{name}")))?
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i, "BINPUT")?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i, "LONG_BINPUT")?
                }
                0x94 => self.memo_put(self.memo.len() as u32, "MEMOIZE")?,
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i, "BINGET")?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i, "LONG_BINGET")?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self
                        .stack
                        .len()
                        .checked_sub(n)
                        .ok_or("TUPLEn on a short stack")?;
                    let items = self.stack.split_off(at);
                    self.push_tuple(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], "APPEND")?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, "APPENDS")?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], "SETITEM")?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, "SETITEMS")?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_leaf(persistent_storage(pid.value)?)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push_leaf(reduce(callable.value, args.value)?)?
                }
                b'b' => {
                    // BUILD: an object's attributes (a state_dict's `_metadata`): not needed.
                    self.pop()?;
                }
                _ => {
                    return Err(format!(
                        "pickle opcode 0x{op:02x} at byte {}, which a state_dict does not use",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

/// `('storage', torch.XStorage, key, location, numel)`.
fn persistent_storage(pid: Value) -> PResult<Value> {
    let Value::Tuple(t) = pid else {
        return Err(format!(
            "a persistent id that is a {} rather than a tuple",
            variant_name(&pid)
        ));
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(class), Value::Str(key), _location, Value::Int(numel)]
            if tag == "storage" =>
        {
            let kind =
                storage_kind(class).ok_or_else(|| format!("storage type {}", shorten(class)))?;
            Ok(Value::Storage {
                kind,
                key: key.clone(),
                numel: *numel,
            })
        }
        _ => Err(format!(
            "a persistent id {} that is not a storage",
            describe_items(&t)
        )),
    }
}

fn ints(v: &Value, what: &str) -> PResult<Vec<i64>> {
    match v {
        Value::Tuple(t) => t
            .iter()
            .map(|x| {
                if let Value::Int(i) = x {
                    Ok(*i)
                } else {
                    Err(format!("a non-integer in a tensor's {what}"))
                }
            })
            .collect(),
        _ => Err(format!("a tensor {what} that is not a tuple")),
    }
}

/// REDUCE: the callables a state_dict's pickle calls, the only ones it may call.
fn reduce(callable: Value, args: Value) -> PResult<Value> {
    let Value::Global(name) = callable else {
        return Err("REDUCE of something that is not a global".into());
    };
    let Value::Tuple(args) = args else {
        return Err(format!(
            "{} called without a tuple of arguments",
            shorten(&name)
        ));
    };
    match name.as_str() {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let [storage, Value::Int(offset), size, stride, ..] = args.as_slice() else {
                return Err(format!("{name} with arguments {}", describe_items(&args)));
            };
            if !matches!(storage, Value::Storage { .. }) {
                return Err(format!("{name} of something that is not a storage"));
            }
            Ok(Value::Tensor {
                storage: Box::new(storage.clone()),
                offset: *offset,
                size: ints(size, "size")?,
                stride: ints(stride, "stride")?,
            })
        }
        "torch._utils._rebuild_parameter" => match args.into_iter().next() {
            Some(t @ Value::Tensor { .. }) => Ok(t),
            _ => Err("a parameter that is not a tensor".into()),
        },
        _ => Err(format!(
            "a call to {}, which a state_dict does not make",
            shorten(&name)
        )),
    }
}

/// `s` cut to 80 characters, for an error message (a name in a hostile file may be megabytes).
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The kinds of a tuple's first items, for an error message (never the whole value).
fn describe_items(items: &[Value]) -> String {
    let kinds: Vec<&str> = items.iter().take(6).map(variant_name).collect();
    let more = if items.len() > 6 { ", …" } else { "" };
    format!("({}{more})", kinds.join(", "))
}

/// How many elements a view of a storage of `numel` elements (`offset`, `size`, `stride`, from
/// the file) has, if it stays inside the storage; computed without overflow, so a crafted view
/// is refused here rather than by libtorch.
fn view_elements(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> PResult<i64> {
    if size.len() > MAX_DIMS || size.len() != stride.len() {
        return Err(format!(
            "{} sizes and {} strides (at most {MAX_DIMS} of each, as many strides as sizes)",
            size.len(),
            stride.len()
        ));
    }
    let shape = format!("size {size:?}, stride {stride:?}, offset {offset}");
    if offset < 0 || size.iter().chain(stride).any(|&x| x < 0) {
        return Err(format!("a negative size, stride or offset ({shape})"));
    }
    let elements = size
        .iter()
        .try_fold(1i64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("more elements than a 64-bit count holds ({shape})"))?;
    let inside = if elements == 0 {
        offset <= numel
    } else {
        // The last element's index, offset + Σ (size - 1) · stride (every size is ≥ 1 here),
        // must be in the storage.
        size.iter()
            .zip(stride)
            .try_fold(offset, |at, (&n, &s)| {
                at.checked_add((n - 1).checked_mul(s)?)
            })
            .is_some_and(|last| last < numel)
    };
    if !inside {
        return Err(format!(
            "a view reaching past its storage of {numel} elements ({shape})"
        ));
    }
    Ok(elements)
}

/// The size an archive entry must have.
enum Expect {
    /// Exactly this many bytes (a storage: what its tensors claim).
    Exactly(u64),
    /// At most this many (the pickle).
    AtMost(u64),
}

/// The zip archive of a `.pth`, read within a budget of bytes set by the file's size.
struct Archive {
    zip: zip::ZipArchive<std::fs::File>,
    /// Each entry's index in the archive, by name.
    entries: HashMap<String, usize>,
    file_len: u64,
    /// What may still be inflated from entries or copied into tensors, in bytes.
    left: u64,
}

impl Archive {
    /// The archive in `file`, or why it is not one.
    fn open(file: std::fs::File) -> PResult<Archive> {
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut zip = zip::ZipArchive::new(file).map_err(|e| {
            format!(
                "not a zip archive ({e}); an older torch.save format? re-save it with a recent \
                 PyTorch"
            )
        })?;
        let mut entries = HashMap::new();
        for i in 0..zip.len() {
            // Raw: the entry's header only, nothing inflated or decrypted.
            let name = zip
                .by_index_raw(i)
                .map_err(|e| format!("a damaged zip archive ({e})"))?
                .name()
                .to_string();
            if entries.insert(name.clone(), i).is_some() {
                return Err(format!("two zip entries named {}", shorten(&name)));
            }
        }
        Ok(Archive {
            zip,
            entries,
            file_len,
            left: file_len
                .saturating_mul(MAX_EXPANSION)
                .saturating_add(EXPANSION_ALLOWANCE),
        })
    }

    /// Takes `bytes` (of `what`) from the budget, or refuses.
    fn spend(&mut self, bytes: u64, what: &str) -> PResult<()> {
        if bytes > self.left {
            return Err(format!(
                "{what} {bytes} bytes, beyond what a file of {} bytes may inflate to \
                 ({MAX_EXPANSION}× its size plus {} MiB in all, {} bytes of it left): a \
                 decompression bomb or a damaged file",
                self.file_len,
                EXPANSION_ALLOWANCE >> 20,
                self.left
            ));
        }
        self.left -= bytes;
        Ok(())
    }

    /// The bytes of entry `name`, whose header must declare the size `expect` asks for and
    /// which is inflated no further than that.
    fn read(&mut self, name: &str, expect: Expect) -> PResult<Vec<u8>> {
        let &i = self.entries.get(name).ok_or("missing")?;
        let (declared, compressed) = {
            let raw = self.zip.by_index_raw(i).map_err(|e| e.to_string())?;
            if aes_encrypted(raw.extra_data()) {
                return Err("encrypted (password-protected), which torch.save never does".into());
            }
            match raw.compression() {
                zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated => {}
                m => {
                    return Err(format!(
                        "compressed with {m}, which torch.save does not use"
                    ))
                }
            }
            (raw.size(), raw.compressed_size())
        };
        if compressed > self.file_len {
            return Err(format!(
                "declared as {compressed} compressed bytes in a file of {}",
                self.file_len
            ));
        }
        match expect {
            Expect::Exactly(n) if declared != n => {
                return Err(format!("of {declared} bytes where its tensors need {n}"))
            }
            Expect::AtMost(n) if declared > n => {
                return Err(format!("of {declared} bytes, beyond the limit of {n}"))
            }
            _ => {}
        }
        self.spend(declared, "inflating to")?;
        let mut f = self.zip.by_index(i).map_err(|e| match e {
            zip::result::ZipError::UnsupportedArchive(m)
                if m == zip::result::ZipError::PASSWORD_REQUIRED =>
            {
                "encrypted (password-protected), which torch.save never does".to_string()
            }
            e => e.to_string(),
        })?;
        let mut bytes = Vec::with_capacity(declared as usize);
        (&mut f)
            .take(declared)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if (bytes.len() as u64) < declared {
            return Err(format!(
                "ending after {} of its declared {declared} bytes",
                bytes.len()
            ));
        }
        // One byte more: a stream going on past its declared size is refused after one byte
        // rather than inflated, and a stream ending there has its checksum checked.
        match f.read(&mut [0u8; 1]) {
            Ok(0) => Ok(bytes),
            Ok(_) => Err(format!("inflating past its declared {declared} bytes")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether a zip entry's extra field holds WinZip's AES encryption record (0x9901), which the
/// zip crate cannot decrypt and, without a password, does not refuse by itself.
fn aes_encrypted(extra: &[u8]) -> bool {
    let mut rest = extra;
    while rest.len() >= 4 {
        let id = u16::from_le_bytes([rest[0], rest[1]]);
        let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
        if id == 0x9901 {
            return true;
        }
        rest = rest.get(4 + len..).unwrap_or_default();
    }
    false
}

/// The named tensors of the `torch.save`d state_dict at `path`, on the CPU, in file order.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let expected = "a PyTorch state_dict saved by torch.save (zip format, PyTorch ≥ 1.6)";
    let bad = |found: String| Error::file(path, expected, found);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = Archive::open(file).map_err(bad)?;
    let pkl_name = archive
        .entries
        .iter()
        .filter(|(n, _)| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min_by_key(|(_, &i)| i)
        .map(|(n, _)| n.clone())
        .ok_or_else(|| bad("a zip archive without <name>/data.pkl".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = archive
        .read(&pkl_name, Expect::AtMost(MAX_PICKLE_BYTES))
        .map_err(|e| bad(format!("{pkl_name} {e}")))?;
    let top = Machine::new(&pkl)
        .run()
        .map_err(|e| bad(format!("{e} in {pkl_name}")))?;
    drop(pkl);
    let Value::Dict(entries) = top else {
        return Err(bad(format!(
            "a pickle of {} rather than a dict",
            variant_name(&top)
        )));
    };
    // Each storage read, with the dtype and length its first tensor claimed for it.
    let mut storages: HashMap<String, (Tensor, Kind, i64)> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Value::Str(name) = k else {
            return Err(bad("a state_dict key that is not a string".into()));
        };
        // Names and keys in messages are shortened: a hostile file's may be megabytes.
        let shown = shorten(&name);
        let Value::Tensor {
            storage,
            offset,
            size,
            stride,
        } = v
        else {
            return Err(bad(format!(
                "entry `{shown}` holding a {} rather than a tensor",
                variant_name(&v)
            )));
        };
        let Value::Storage { kind, key, numel } = *storage else {
            unreachable!("checked when rebuilt")
        };
        let elt = kind.elt_size_in_bytes() as u64;
        if let Some(&(_, k, n)) = storages.get(&key) {
            if (k, n) != (kind, numel) {
                return Err(bad(format!(
                    "tensor `{shown}` claiming storage {} as {numel} elements of {kind:?}, \
                     where an earlier tensor claimed {n} of {k:?}",
                    shorten(&key)
                )));
            }
        } else {
            let want = u64::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(elt))
                .ok_or_else(|| bad(format!("tensor `{shown}` of a storage of {numel} elements")))?;
            let bytes = archive
                .read(&format!("{prefix}data/{key}"), Expect::Exactly(want))
                .map_err(|e| {
                    bad(format!(
                        "storage {prefix}data/{} (of tensor `{shown}`, {numel} elements of \
                         {kind:?}) {e}",
                        shorten(&key)
                    ))
                })?;
            let t = Tensor::f_from_data_size(&bytes, &[numel], kind)
                .map_err(|e| bad(format!("tensor `{shown}` that libtorch refuses ({e})")))?;
            storages.insert(key.clone(), (t, kind, numel));
        }
        let elements = view_elements(numel, offset, &size, &stride)
            .map_err(|e| bad(format!("tensor `{shown}` with {e}")))?;
        archive
            .spend((elements as u64).saturating_mul(elt), "taking")
            .map_err(|e| bad(format!("tensor `{shown}` {e}")))?;
        let t = storages[&key]
            .0
            .f_as_strided(&size, &stride, Some(offset))
            .and_then(|t| t.f_contiguous())
            .and_then(|t| t.f_to_device(Device::Cpu))
            .map_err(|e| bad(format!("tensor `{shown}` that libtorch refuses ({e})")))?;
        out.push((name, t));
    }
    Ok(out)
}

fn variant_name(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "string",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global(_) => "global",
        Value::Storage { .. } => "storage",
        Value::Tensor { .. } => "tensor",
        Value::Mark => "mark",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol-2 pickle: PROTO 2, `body`, STOP.
    fn pickle(body: &[u8]) -> Vec<u8> {
        [&b"\x80\x02"[..], body, b"."].concat()
    }

    fn run(body: &[u8]) -> PResult<Value> {
        Machine::new(&pickle(body)).run()
    }

    /// BINUNICODE.
    fn text(s: &str) -> Vec<u8> {
        [&b"X"[..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat()
    }

    /// `{"w": _rebuild_tensor_v2(storage "0" of 6 floats, 1, (2, 2), (3, 1))}` as torch.save
    /// writes it, each value memoized.
    fn state_dict() -> Vec<u8> {
        [
            &b"}q\x00"[..],
            &text("w"),
            b"q\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((",
            &text("storage"),
            b"q\x03ctorch\nFloatStorage\nq\x04",
            &text("0"),
            b"q\x05",
            &text("cpu"),
            b"q\x06K\x06tq\x07QK\x01K\x02K\x02\x86q\x08K\x03K\x01\x86q\x09\x89",
            b"ccollections\nOrderedDict\nq\x0a)Rq\x0btq\x0cRq\x0ds",
        ]
        .concat()
    }

    #[test]
    fn a_state_dict_pickle_rebuilds_its_tensor() {
        let Value::Dict(d) = run(&state_dict()).unwrap() else {
            panic!("not a dict")
        };
        let [(
            Value::Str(k),
            Value::Tensor {
                storage,
                offset,
                size,
                stride,
            },
        )] = d.as_slice()
        else {
            panic!("{d:?}")
        };
        assert_eq!(
            (k.as_str(), *offset, size, stride),
            ("w", 1, &vec![2, 2], &vec![3, 1])
        );
        assert!(matches!(
            **storage,
            Value::Storage {
                kind: Kind::Float,
                numel: 6,
                ..
            }
        ));
    }

    /// A state_dict's values take a small part of the budget (a ResNet-50's, 326 tensors, 1.4 MB
    /// of 64 MiB); this one's, a tensor, under 8 KB.
    #[test]
    fn a_state_dict_pickle_is_far_within_the_budget() {
        assert_eq!(
            SLOT, 80,
            "the limits' documentation counts 80 bytes a value"
        );
        let data = pickle(&state_dict());
        let mut m = Machine::new(&data);
        m.run().unwrap();
        assert!(m.built < 8192, "{} bytes", m.built);
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        // 2,000,000 TUPLE1 around an empty tuple: refused at depth 1001, on a test thread's
        // 2 MiB stack (nothing recurses over the depth, in the machine or in dropping).
        let deep = [&b")"[..], &vec![0x85; 2_000_000]].concat();
        let e = run(&deep).unwrap_err();
        assert!(e.contains("nested more than 1000 deep"), "{e}");
        // MARK ... TUPLE, and lists appended to lists, nest the same way.
        let marks = [vec![b'('; 1500], vec![b't'; 1500]].concat();
        assert!(run(&marks).unwrap_err().contains("nested more than 1000"));
        let lists = [vec![b']'; 1500], vec![b'a'; 1499]].concat();
        assert!(run(&lists).unwrap_err().contains("nested more than 1000"));
        // 1000 deep is read, copied through the memo and dropped; one level more is not.
        let thousand = [&b")"[..], &[0x85; 999]].concat();
        assert!(matches!(run(&thousand), Ok(Value::Tuple(_))));
        assert!(run(&[&thousand[..], b"q\x00h\x00"].concat()).is_ok());
        assert!(run(&[&thousand[..], b"\x85"].concat()).is_err());
    }

    #[test]
    fn a_flood_of_values_is_refused_by_the_stack_and_the_budget() {
        // 16 MiB of NONE: refused at the 100,001st, whatever the pickle's length.
        let data = pickle(&vec![b'N'; 16 << 20]);
        let mut m = Machine::new(&data);
        let e = m.run().unwrap_err();
        assert!(e.contains("more than 100000 values on the stack"), "{e}");
        assert_eq!(m.pos, 2 + 100_001);
        // Values that leave the stack count too: NONE appended to a list, millions of times,
        // is refused after some 840,000.
        let data = pickle(&[&b"]"[..], &b"Na".repeat(4 << 20)].concat());
        let mut m = Machine::new(&data);
        let e = m.run().unwrap_err();
        assert!(e.contains("values taking more than 64 MiB"), "{e}");
        assert!(
            (1_500_000..1_800_000).contains(&m.pos),
            "refused at byte {}",
            m.pos
        );
        // Strings count by their bytes: 1 MiB fetched from the memo 100 times.
        let big = [
            text(&"x".repeat(1 << 20)),
            b"q\x00".to_vec(),
            b"h\x00".repeat(100),
        ]
        .concat();
        assert!(run(&big)
            .unwrap_err()
            .contains("memo references counted as copies"));
    }

    #[test]
    fn memo_billion_laughs_stop_after_a_few_doublings() {
        // memo 0 = (); 39 times: memo 0 = (memo 0, memo 0). 2^39 values if copied.
        let laughs = [&b")q\x00"[..], &b"h\x00h\x00\x86q\x00".repeat(39)].concat();
        let start = std::time::Instant::now();
        let e = run(&laughs).unwrap_err();
        assert!(e.contains("memo references counted as copies"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn only_the_allow_listed_callables_are_called() {
        for global in [
            "os\nsystem\n",
            "posix\nsystem\n",
            "builtins\neval\n",
            "subprocess\nPopen\n",
            "torch\nload\n",
        ] {
            let call = [&b"c"[..], global.as_bytes(), b"(", &text("id"), b"tR"].concat();
            let e = run(&call).unwrap_err();
            let name = global.trim_end().replace('\n', ".");
            assert_eq!(
                e,
                format!("a call to {name}, which a state_dict does not make")
            );
        }
        // Other ways of calling are opcodes the machine does not have.
        for (op, body) in [
            (0x93, &b"\x93"[..]),
            (b'i', b"ios\nsystem\n"),
            (b'o', b"(o"),
        ] {
            let e = run(body).unwrap_err();
            assert!(e.contains(&format!("opcode 0x{op:02x}")), "{e}");
        }
        // A name of a megabyte is shortened in the message.
        let long = format!("c{}\nx\n)R", "m".repeat(1 << 20));
        assert!(run(long.as_bytes()).unwrap_err().len() < 200);
    }

    #[test]
    fn views_are_checked_without_overflow() {
        assert_eq!(view_elements(6, 1, &[2, 2], &[3, 1]), Ok(4));
        assert_eq!(view_elements(6, 0, &[2, 3], &[3, 1]), Ok(6));
        assert_eq!(view_elements(6, 6, &[0, 3], &[3, 1]), Ok(0));
        assert_eq!(view_elements(1, 0, &[1000, 1000], &[0, 0]), Ok(1_000_000));
        for (offset, size, stride) in [
            (0, vec![2, 3], vec![3, 2]),               // one past the end
            (i64::MAX - 2, vec![2], vec![1]),          // the offset overflows
            (0, vec![2, 2], vec![i64::MAX, 1]),        // a stride overflows
            (0, vec![i64::MAX, i64::MAX], vec![0, 0]), // the element count overflows
            (-1, vec![1], vec![1]),                    // a negative offset
            (0, vec![-1], vec![1]),                    // a negative size
            (0, vec![2], vec![-1]),                    // a negative stride
            (0, vec![2, 2], vec![1]),                  // as many strides as sizes
            (0, vec![1; 65], vec![1; 65]),             // too many dimensions
            (7, vec![0], vec![1]),                     // an empty view past the end
        ] {
            assert!(
                view_elements(6, offset, &size, &stride).is_err(),
                "{offset} {size:?} {stride:?}"
            );
        }
    }

    #[test]
    fn aes_records_are_found_in_extra_fields() {
        assert!(!aes_encrypted(b""));
        assert!(!aes_encrypted(b"\x01\x00\x08\x00\0\0\0\0\0\0\0\0"));
        assert!(aes_encrypted(
            b"\x01\x00\x08\x00\0\0\0\0\0\0\0\0\x01\x99\x07\x00\x02\x00AE\x03\x08\x00"
        ));
        assert!(!aes_encrypted(b"\x01\x00\xff\xff\x01\x99"));
    }

    #[test]
    fn names_are_shortened_for_messages() {
        assert_eq!(shorten("abc"), "abc");
        assert_eq!(shorten(&"é".repeat(100)), format!("{}…", "é".repeat(80)));
    }
}
