//! Reading the tensors of a file PyTorch wrote with `torch.save(model.state_dict(), path)`:
//! the zip format (PyTorch ≥ 1.6), `<archive>/data.pkl` plus one raw little-endian file per
//! storage under `<archive>/data/`. libtorch's own unpickler turns the `OrderedDict` of a Python
//! state_dict into `None`, so this reads the pickle itself: a small stack machine for the
//! opcodes `torch.save` emits for a dict of tensors (protocol 2), which rebuilds each tensor
//! from its storage, offset, size and stride (`torch._utils._rebuild_tensor_v2`) and refuses
//! anything else with an error naming it. Nothing in the file is executed.
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

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

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

type PResult<T> = std::result::Result<T, String>;

impl Machine<'_> {
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
    fn pop(&mut self) -> PResult<Value> {
        self.stack
            .pop()
            .ok_or_else(|| "a pickle that pops an empty stack".to_string())
    }
    /// The values above the topmost mark, removing the mark.
    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("a pickle without the mark it needs")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top_dict(&mut self) -> PResult<&mut Vec<(Value, Value)>> {
        match self.stack.last_mut() {
            Some(Value::Dict(d)) => Ok(d),
            _ => Err("SETITEM on something that is not a dict".into()),
        }
    }

    fn run(mut self) -> PResult<Value> {
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
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64))
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
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                    self.stack.push(Value::Float(f64::from_be_bytes(b)))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s))
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")))
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    let v = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or("BINPUT on an empty stack")?;
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or("LONG_BINPUT on an empty stack")?;
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or("MEMOIZE on an empty stack")?;
                    self.memo.insert(i, v);
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self
                        .memo
                        .get(&i)
                        .cloned()
                        .ok_or(format!("BINGET of unknown memo {i}"))?;
                    self.stack.push(v)
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self
                        .memo
                        .get(&i)
                        .cloned()
                        .ok_or(format!("LONG_BINGET of unknown memo {i}"))?;
                    self.stack.push(v)
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self
                        .stack
                        .len()
                        .checked_sub(n)
                        .ok_or("TUPLEn on a short stack")?;
                    let items = self.stack.split_off(at);
                    self.stack.push(Value::Tuple(items))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.stack.last_mut() {
                        Some(Value::List(l)) => l.push(v),
                        _ => return Err("APPEND on something that is not a list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.stack.last_mut() {
                        Some(Value::List(l)) => l.extend(items),
                        _ => return Err("APPENDS on something that is not a list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.top_dict()?.push((k, v));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err("SETITEMS with an odd number of items".into());
                    }
                    let d = self.top_dict()?;
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_storage(pid)?)
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(reduce(callable, args)?)
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
        return Err("a persistent id that is not a tuple".into());
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(class), Value::Str(key), _location, Value::Int(numel)]
            if tag == "storage" =>
        {
            let kind = storage_kind(class).ok_or_else(|| format!("storage type {class}"))?;
            Ok(Value::Storage {
                kind,
                key: key.clone(),
                numel: *numel,
            })
        }
        _ => Err(format!("a persistent id {t:?} that is not a storage")),
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

fn reduce(callable: Value, args: Value) -> PResult<Value> {
    let Value::Global(name) = callable else {
        return Err("REDUCE of something that is not a global".into());
    };
    let Value::Tuple(args) = args else {
        return Err(format!("{name} called without a tuple of arguments"));
    };
    match name.as_str() {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let [storage, Value::Int(offset), size, stride, ..] = args.as_slice() else {
                return Err(format!("{name} with arguments {args:?}"));
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
            "a call to {name}, which a state_dict does not make"
        )),
    }
}

/// The named tensors of the `torch.save`d state_dict at `path`, on the CPU, in file order.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let expected = "a PyTorch state_dict saved by torch.save (zip format, PyTorch ≥ 1.6)";
    let bad = |found: String| Error::file(path, expected, found);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "not a zip archive ({e}); an older torch.save format? re-save it with a recent PyTorch"
        ))
    })?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| bad("a zip archive without <name>/data.pkl".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| Ok(f.read_to_end(&mut pkl)?))
        .map_err(|e| bad(format!("an unreadable {pkl_name} ({e})")))?;
    let top = Machine {
        data: &pkl,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
    .map_err(|e| bad(format!("{e} in {pkl_name}")))?;
    let Value::Dict(entries) = top else {
        return Err(bad(format!(
            "a pickle of {} rather than a dict",
            variant_name(&top)
        )));
    };
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Value::Str(name) = k else {
            return Err(bad("a state_dict key that is not a string".into()));
        };
        let Value::Tensor {
            storage,
            offset,
            size,
            stride,
        } = v
        else {
            return Err(bad(format!(
                "entry `{name}` holding a {} rather than a tensor",
                variant_name(&v)
            )));
        };
        let Value::Storage { kind, key, numel } = *storage else {
            unreachable!("checked when rebuilt")
        };
        if !storages.contains_key(&key) {
            let entry = format!("{prefix}data/{key}");
            let mut bytes = Vec::new();
            zip.by_name(&entry)
                .and_then(|mut f| Ok(f.read_to_end(&mut bytes)?))
                .map_err(|e| bad(format!("storage {entry} missing or unreadable ({e})")))?;
            let want = numel as usize * kind.elt_size_in_bytes();
            if bytes.len() != want {
                return Err(bad(format!(
                    "storage {entry} of {} bytes where {numel} elements of {kind:?} need {want}",
                    bytes.len()
                )));
            }
            let t = Tensor::f_from_data_size(&bytes, &[numel], kind)?;
            storages.insert(key.clone(), t);
        }
        let base = &storages[&key];
        let reach = size
            .iter()
            .zip(&stride)
            .map(|(&n, &s)| (n - 1).max(0) * s)
            .sum::<i64>()
            + offset
            + 1;
        if size.iter().any(|&n| n < 0)
            || stride.iter().any(|&s| s < 0)
            || (size.iter().all(|&n| n > 0) && reach > numel)
        {
            return Err(bad(format!("tensor `{name}` reaching past its storage (size {size:?}, stride {stride:?}, offset {offset})")));
        }
        let t = base
            .f_as_strided(&size, &stride, Some(offset))?
            .f_contiguous()?
            .f_to_device(Device::Cpu)?;
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
