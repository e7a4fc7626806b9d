//! What a state_dict's pickle may call or name, and what each builds: the storages its
//! persistent ids name (`('storage', torch.XStorage, key, location, numel)`), and the callables
//! REDUCE may call (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and
//! `_rebuild_parameter`). Anything else is refused by name.
use tch::Kind;

use super::{describe_items, shorten, variant_name, PResult, Value};

/// `('storage', torch.XStorage, key, location, numel)`.
pub(super) fn persistent_storage(pid: Value) -> PResult<Value> {
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
pub(super) fn reduce(callable: Value, args: Value) -> PResult<Value> {
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

/// The element type of a `torch.XStorage` class.
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
