//! A pickle reader for the subset of the format `torch.save` writes: the containers, numbers and
//! strings of a checkpoint dict, tensors (`torch._utils._rebuild_tensor_v2` over a persistent
//! storage id) and `collections.OrderedDict`. Nothing is ever called or constructed from the
//! stream: an object of any other class becomes [`Value::Opaque`] (an `argparse.Namespace` of
//! hyper-parameters, say), so a checkpoint that carries one still imports. libtorch's own C++
//! unpickler cannot be used: it reads every `OrderedDict` — each `state_dict()` — as `None`.
use std::collections::HashMap;

use tch::Kind;

/// A tensor as the pickle describes it; its bytes live in the container's storage `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Name of the storage record in the container (`data/<key>`).
    pub key: String,
    /// Element type.
    pub kind: Kind,
    /// Elements in the storage.
    pub storage_numel: i64,
    /// Offset of the first element, in elements.
    pub offset: i64,
    /// Shape.
    pub size: Vec<i64>,
    /// Strides, in elements.
    pub stride: Vec<i64>,
}

/// A decoded value. Containers refer to their items by index into [`Pickle::objects`], so a
/// container memoised and filled later (how pickle builds every dict) is seen filled everywhere.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A tuple, list or set.
    Seq(Vec<usize>),
    /// A dict or `OrderedDict`, in insertion order.
    Dict(Vec<(usize, usize)>),
    /// A tensor.
    Tensor(TensorRef),
    /// A reference to a global (`module.name`) not yet applied to anything.
    Global(String),
    /// A storage: (dtype, key, elements).
    Storage(Kind, String, i64),
    /// An object this reader does not decode, named by its class.
    Opaque(String),
}

/// A pickle that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("pickle offset {offset}: {reason}")]
pub struct PickleError {
    /// Byte offset of the failing opcode.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// The decoded pickle: every object, and the root's index.
#[derive(Debug, Default)]
pub struct Pickle {
    /// All objects; containers hold indices into this.
    pub objects: Vec<Value>,
    /// The value `STOP` returned.
    pub root: usize,
}

/// Most dimensions a tensor may have (PyTorch's own limit is lower).
const MAX_DIMS: usize = 64;

/// Most paths [`Pickle::leaves`] walks: far more than any checkpoint has entries, far fewer than
/// a hostile pickle of containers that share one another (`[a, a]`, nested) spells out.
pub const MAX_PATHS: usize = 1 << 18;

/// A pickle whose containers, flattened into paths, would never end.
#[derive(Debug, thiserror::Error)]
#[error(
    "the pickle's containers refer to one another along more than {MAX_PATHS} paths; \
     a torch.save checkpoint has far fewer"
)]
pub struct TooManyPaths;

/// The storage classes `torch.save` names, with their element types.
fn storage_kind(global: &str) -> Option<Kind> {
    Some(match global.strip_prefix("torch.")? {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// Everything that went onto the stack: an object index or a `MARK`.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Object(usize),
    Mark,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_at: usize,
    objects: Vec<Value>,
    stack: Vec<Slot>,
    memo: HashMap<u32, usize>,
}

impl Machine<'_> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_at,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let Some(end) = self.pos.checked_add(n).filter(|&e| e <= self.data.len()) else {
            return self.fail("the pickle ends in the middle of an instruction");
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.fail("unterminated GLOBAL name");
        };
        let text = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(text)
    }

    fn string(&mut self, n: usize) -> Result<(), PickleError> {
        let text = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.push(Value::Str(text));
        Ok(())
    }

    fn push(&mut self, value: Value) {
        self.objects.push(value);
        self.stack.push(Slot::Object(self.objects.len() - 1));
    }

    fn pop(&mut self) -> Result<usize, PickleError> {
        match self.stack.pop() {
            Some(Slot::Object(i)) => Ok(i),
            Some(Slot::Mark) => self.fail("a MARK where a value was expected"),
            None => self.fail("stack underflow"),
        }
    }

    fn top(&self) -> Result<usize, PickleError> {
        match self.stack.last() {
            Some(Slot::Object(i)) => Ok(*i),
            _ => self.fail("no value on the stack"),
        }
    }

    /// Pops everything down to the newest MARK.
    fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let Some(mark) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return self.fail("no MARK on the stack");
        };
        let items = self
            .stack
            .drain(mark..)
            .skip(1)
            .filter_map(|s| match s {
                Slot::Object(i) => Some(i),
                Slot::Mark => None,
            })
            .collect();
        Ok(items)
    }

    fn memoize(&mut self, key: u32) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn get(&mut self, key: u32) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(&i) => {
                self.stack.push(Slot::Object(i));
                Ok(())
            }
            None => self.fail(format!("memo key {key} was never stored")),
        }
    }

    fn int(&self, i: usize) -> Option<i64> {
        match self.objects.get(i)? {
            Value::Int(v) => Some(*v),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn ints(&self, i: usize) -> Option<Vec<i64>> {
        match self.objects.get(i)? {
            // A shape longer than any tensor's is refused before it is copied.
            Value::Seq(items) if items.len() > MAX_DIMS => None,
            Value::Seq(items) => items.iter().map(|&j| self.int(j)).collect(),
            _ => None,
        }
    }

    fn set_items(&mut self, target: usize, items: &[usize]) -> Result<(), PickleError> {
        match self.objects.get_mut(target) {
            Some(Value::Dict(entries)) => {
                for pair in items.chunks(2) {
                    if let [k, v] = pair {
                        entries.push((*k, *v));
                    }
                }
                Ok(())
            }
            // Items of an object we do not decode are dropped with it.
            Some(Value::Opaque(_)) => Ok(()),
            _ => self.fail("SETITEM(S) on something that is not a dict"),
        }
    }

    fn append(&mut self, target: usize, items: &[usize]) -> Result<(), PickleError> {
        match self.objects.get_mut(target) {
            Some(Value::Seq(list)) => {
                list.extend_from_slice(items);
                Ok(())
            }
            Some(Value::Opaque(_)) => Ok(()),
            _ => self.fail("APPEND(S) on something that is not a list"),
        }
    }

    /// `callable(*args)` for the callables `torch.save` uses; anything else is opaque.
    fn reduce(&mut self, callable: usize, args: usize) -> Result<Value, PickleError> {
        let name = match &self.objects[callable] {
            Value::Global(name) => name.clone(),
            other => return self.fail(format!("REDUCE applies {other:?}, not a global")),
        };
        // Only the first four arguments are ever used: a hostile pickle may apply many globals
        // to one huge memoised tuple, and copying it each time would be quadratic.
        let args: Vec<usize> = match &self.objects[args] {
            Value::Seq(items) => items.iter().take(4).copied().collect(),
            _ => return self.fail(format!("REDUCE of {name} without an argument tuple")),
        };
        match name.as_str() {
            "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let bad = || format!("{name} with unexpected arguments");
                let (Some(&storage), Some(&offset), Some(&size), Some(&stride)) =
                    (args.first(), args.get(1), args.get(2), args.get(3))
                else {
                    return self.fail(bad());
                };
                let Value::Storage(kind, key, numel) = self.objects[storage].clone() else {
                    return self.fail(bad());
                };
                let (Some(offset), Some(size), Some(stride)) =
                    (self.int(offset), self.ints(size), self.ints(stride))
                else {
                    return self.fail(bad());
                };
                if size.len() != stride.len() {
                    return self.fail(bad());
                }
                Ok(Value::Tensor(TensorRef {
                    key,
                    kind,
                    storage_numel: numel,
                    offset,
                    size,
                    stride,
                }))
            }
            // A Parameter pickles as its data tensor plus flags.
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match args.first() {
                    // Only a tensor is imported; copying anything else (a huge list, say) for
                    // every application would be quadratic again.
                    Some(&data) => Ok(match &self.objects[data] {
                        Value::Tensor(t) => Value::Tensor(t.clone()),
                        _ => Value::Opaque(name),
                    }),
                    None => self.fail(format!("{name} without arguments")),
                }
            }
            _ => Ok(Value::Opaque(name)),
        }
    }

    /// A persistent id: `('storage', storage_type, key, location, numel)`.
    fn persistent(&mut self, pid: usize) -> Result<Value, PickleError> {
        let Value::Seq(items) = &self.objects[pid] else {
            return self.fail("a persistent id that is not a tuple");
        };
        let fields: Vec<&Value> = items.iter().map(|&i| &self.objects[i]).collect();
        match fields.as_slice() {
            [
                Value::Str(tag),
                Value::Global(class),
                Value::Str(key),
                _,
                Value::Int(numel),
            ] if tag == "storage" => match storage_kind(class) {
                Some(kind) => Ok(Value::Storage(kind, key.clone(), *numel)),
                None => self.fail(format!("unsupported storage type {class}")),
            },
            _ => self.fail("a persistent id other than a tensor storage"),
        }
    }

    fn run(mut self) -> Result<Pickle, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO n
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a length hint only
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        objects: self.objects,
                        root,
                    });
                }
                b'(' => self.stack.push(Slot::Mark),
                b'}' => self.push(Value::Dict(Vec::new())),
                b']' | b')' | 0x8f => self.push(Value::Seq(Vec::new())),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(i64::from(v)));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let bytes = self.take(n)?.to_vec();
                    if n > 8 {
                        self.push(Value::Opaque("int".into()));
                    } else {
                        // Little-endian two's complement, sign-extended from its top byte.
                        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                            0xff
                        } else {
                            0
                        };
                        let mut full = [fill; 8];
                        full[..n].copy_from_slice(&bytes);
                        self.push(Value::Int(i64::from_le_bytes(full)));
                    }
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v));
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    self.string(n)?;
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    self.string(n)?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.le()?);
                    let Ok(n) = usize::try_from(n) else {
                        return self.fail("a string longer than memory");
                    };
                    self.string(n)?;
                }
                b'C' => {
                    let n = usize::from(self.u8()?);
                    self.take(n)?;
                    self.push(Value::Opaque("bytes".into()));
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    self.take(n)?;
                    self.push(Value::Opaque("bytes".into()));
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memoize(u32::from(k))?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memoize(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memoize(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.get(u32::from(k))?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(format!("{module}.{name}")));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.objects[module], &self.objects[name]) {
                        (Value::Str(m), Value::Str(n)) => {
                            let global = format!("{m}.{n}");
                            self.push(Value::Global(global));
                        }
                        _ => return self.fail("STACK_GLOBAL of non-strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.push(value);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let name = match &self.objects[class] {
                        Value::Global(name) => name.clone(),
                        _ => "object".into(),
                    };
                    self.push(Value::Opaque(name));
                }
                b'b' => {
                    // BUILD sets an object's attributes — an OrderedDict's `_metadata`, an
                    // opaque object's fields — never a dict's items: dropped.
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let value = self.persistent(pid)?;
                    self.push(value);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, &[key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(target, &items)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    let target = self.top()?;
                    self.append(target, &[item])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append(target, &items)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Seq(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Seq(items));
                }
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(Slot::Object(top));
                }
                other => {
                    return self.fail(format!("unsupported pickle opcode 0x{other:02x}"));
                }
            }
        }
    }
}

/// Decodes a pickle.
pub fn decode(data: &[u8]) -> Result<Pickle, PickleError> {
    Machine {
        data,
        pos: 0,
        op_at: 0,
        objects: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

impl Pickle {
    /// Every leaf worth importing under its dotted path (`state_dict.module.conv1.weight`):
    /// tensors, integers and strings. Dict keys that are strings or integers name the path;
    /// sequence items are numbered.
    pub fn leaves(&self) -> Result<Vec<(String, &Value)>, TooManyPaths> {
        let mut out = Vec::new();
        let mut budget = MAX_PATHS;
        self.walk(self.root, String::new(), &mut out, 0, &mut budget)?;
        Ok(out)
    }

    fn walk<'a>(
        &'a self,
        i: usize,
        path: String,
        out: &mut Vec<(String, &'a Value)>,
        depth: u32,
        budget: &mut usize,
    ) -> Result<(), TooManyPaths> {
        // A self-referencing container cannot come from torch.save; the bound keeps a hostile
        // file from recursing without end.
        if depth > 64 {
            return Ok(());
        }
        // Containers shared along many paths (or with themselves) multiply: bound the walk.
        *budget = budget.checked_sub(1).ok_or(TooManyPaths)?;
        let join = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        match &self.objects[i] {
            Value::Dict(entries) => {
                for &(k, v) in entries {
                    let key = match &self.objects[k] {
                        Value::Str(s) => s.clone(),
                        Value::Int(n) => n.to_string(),
                        _ => continue,
                    };
                    self.walk(v, join(&key), out, depth + 1, budget)?;
                }
            }
            Value::Seq(items) => {
                for (n, &item) in items.iter().enumerate() {
                    self.walk(item, join(&n.to_string()), out, depth + 1, budget)?;
                }
            }
            leaf @ (Value::Tensor(_) | Value::Int(_) | Value::Str(_)) => out.push((path, leaf)),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_unknown_input_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\x7f",
            b"h\x05.",
            b"\xfe",
            b"u.",
            b"s.",
        ] {
            assert!(decode(data).is_err(), "{data:?}");
        }
    }

    #[test]
    fn negative_long1_and_nested_containers_decode() {
        // {'a': [1, -2], 'b': (True,)}, written with protocol 2 opcodes.
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01\x8a\x01\xfeeX\x01\x00\x00\x00b\x88\x85u.";
        let p = decode(data).expect("decodes");
        let leaves: Vec<(String, Value)> = p
            .leaves()
            .expect("a few paths")
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        assert_eq!(
            leaves,
            vec![
                ("a.0".into(), Value::Int(1)),
                ("a.1".into(), Value::Int(-2))
            ]
        );
    }
}
