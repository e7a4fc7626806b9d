//! The pickle stack machine that reads a `.pth`'s `data.pkl` (see [`super::torch_file`]): the
//! opcodes `torch.save` emits for a dict of tensors (protocol 2), which rebuilds each tensor from
//! its storage, offset, size and stride (`torch._utils._rebuild_tensor_v2`) and refuses anything
//! else with an error naming it. Nothing in the pickle is executed.
//!
//! What running it may cost is bounded by fixed limits, each checked before the work it bounds:
//! its containers nest at most [`MAX_DEPTH`] deep, its stack holds at most [`MAX_STACK`] values,
//! and the values it builds take at most [`MAX_PICKLE_MEMORY`], a memo fetch counted as a copy
//! of what it fetches (so a "billion laughs" of doubling memo references stops after a few
//! doublings).
//!
//! This file holds the machine and its limits; `calls.rs` what the pickle may call (storages,
//! the tensor rebuilders).
use std::collections::HashMap;

use tch::Kind;

mod calls;

use calls::{persistent_storage, reduce};

/// How deep the pickle's containers may nest. A state_dict's nest 3 deep (the dict, a tensor's
/// arguments, its size); Python's own pickler gives up near 1000 (its recursion limit).
pub(super) const MAX_DEPTH: usize = 1000;
/// The most values the pickle's stack may hold at once. Python's pickler adds a dict's items
/// 1000 at a time, so a state_dict's stack holds a few thousand at most.
pub(super) const MAX_STACK: usize = 100_000;
/// What the values the pickle builds may take, in bytes, counted as they are built, a memo store
/// or fetch as a copy of its value: some 840,000 values (a value's slot is 80 bytes). A
/// ResNet-50 state_dict's take 1.4 MB (`torch.save` memoizes every value, so about 4.4 KB a
/// tensor): this allows some 14,000 tensors, where the models ipirm reads have at most 326.
pub(super) const MAX_PICKLE_MEMORY: usize = 64 << 20;

/// A pickled value, as far as a state_dict needs.
#[derive(Debug, Clone)]
pub(super) enum Value {
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

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Slot>,
    /// The bytes of every value built so far, each memo store and fetch counted as a copy. It
    /// never decreases, so it bounds what the machine has allocated.
    built: usize,
}

pub(super) type PResult<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
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

    pub(super) fn run(&mut self) -> PResult<Value> {
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

/// `s` cut to 80 characters, for an error message (a name in a hostile file may be megabytes).
pub(super) fn shorten(s: &str) -> String {
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

pub(super) fn variant_name(v: &Value) -> &'static str {
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
    fn names_are_shortened_for_messages() {
        assert_eq!(shorten("abc"), "abc");
        assert_eq!(shorten(&"é".repeat(100)), format!("{}…", "é".repeat(80)));
    }
}
