//! A config to and from text: `section.key=value` overrides ([`Config::set`], each value parsed
//! as the type its key already has), TOML files, and the config a run recorded in the store
//! ([`Config::from_recorded_json`]); and a config as `section.key` leaves ([`json_leaves`]), to
//! compare two key by key.
use std::collections::BTreeMap;

use super::Config;
use crate::{Error, Result};

impl Config {
    /// Reads a TOML file with any subset of the sections (missing keys keep their defaults).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| Error::file(path, "a TOML run config (sections data, model, train, ipirm, maximize, knn, linear, store)", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies one `section.key=value` override. The value is parsed as the type the key already
    /// has (number, bool, string, list as `[a,b]`, `none` for an optional value). Call
    /// [`Config::validate`] after the last override.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (path, raw) = assignment
            .split_once('=')
            .ok_or_else(|| Error::config(assignment, "expected `section.key=value`"))?;
        let path = path.trim();
        let (section, key) = path
            .split_once('.')
            .ok_or_else(|| Error::config(path, "expected `section.key` (e.g. `train.epochs`)"))?;
        let mut tree = serde_json::to_value(&*self).expect("config serialises");
        let sections = tree.as_object_mut().expect("config is an object");
        let known: Vec<String> = sections.keys().cloned().collect();
        let sec = sections.get_mut(section).ok_or_else(|| {
            Error::config(
                path,
                format!(
                    "unknown section `{section}`; sections are {}",
                    known.join(", ")
                ),
            )
        })?;
        let sec = sec.as_object_mut().expect("sections are objects");
        let keys: Vec<String> = sec.keys().cloned().collect();
        let slot = sec.get_mut(key).ok_or_else(|| {
            Error::config(
                path,
                format!(
                    "unknown key `{key}` in section `{section}`; keys are {}",
                    keys.join(", ")
                ),
            )
        })?;
        *slot = parse_like(slot, raw.trim()).map_err(|m| Error::config(path, m))?;
        *self = serde_json::from_value(tree)
            .map_err(|e| Error::config(path, format!("bad value `{}`: {e}", raw.trim())))?;
        Ok(())
    }

    /// Applies overrides in order, then validates.
    pub fn with_overrides<S: AsRef<str>>(mut self, overrides: &[S]) -> Result<Config> {
        for o in overrides {
            self.set(o.as_ref())?;
        }
        self.validate()?;
        Ok(self)
    }

    /// The config a run recorded (`RunRecord::config_json`); see [`recorded_config_value`].
    pub fn from_recorded_json(text: &str) -> serde_json::Result<Config> {
        serde_json::from_value(recorded_config_value(text)?)
    }

    /// The config as TOML (what `--config` reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises to TOML")
    }
}

/// The JSON of the config a run recorded, with the settings it lacks because they came after it
/// read as the behaviour the run had, where that is not today's default: `data.antialias` false
/// (the plain resize; default on since the setting). A missing setting otherwise takes its
/// default when the config is read.
pub fn recorded_config_value(text: &str) -> serde_json::Result<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_str(text)?;
    if let Some(data) = v.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.entry("antialias").or_insert(false.into());
    }
    Ok(v)
}

/// Parses `raw` into a JSON value of the same kind as `current`.
fn parse_like(
    current: &serde_json::Value,
    raw: &str,
) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value;
    let lower = raw.to_ascii_lowercase();
    if matches!(lower.as_str(), "none" | "null") {
        return Ok(Value::Null);
    }
    Ok(match current {
        Value::Bool(_) => match lower.as_str() {
            // A device-dependent switch set back to its default (`train.tf32=auto`); a plain
            // bool refuses it when the config is rebuilt, naming the key.
            "auto" => Value::String("auto".into()),
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => return Err(format!("expected true or false, got `{raw}`")),
        },
        Value::Number(n) => {
            if n.is_u64() || n.is_i64() {
                // Unsigned fields (seeds) take the whole u64 range; the field's own type decides.
                if let Ok(v) = raw.parse::<i64>() {
                    Value::from(v)
                } else if let Ok(v) = raw.parse::<u64>() {
                    Value::from(v)
                } else {
                    return Err(format!("expected an integer, got `{raw}`"));
                }
            } else {
                let v: f64 = raw
                    .parse()
                    .map_err(|_| format!("expected a number, got `{raw}`"))?;
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .ok_or_else(|| format!("expected a finite number, got `{raw}`"))?
            }
        }
        Value::Array(current) => {
            // Each item as the list's items are (integers for milestones, numbers for a range).
            let like = current.first().cloned().unwrap_or(Value::from(0u64));
            let kind = if like.is_u64() { "integers" } else { "numbers" };
            let inner = raw.trim_start_matches('[').trim_end_matches(']');
            let items: std::result::Result<Vec<Value>, String> = inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    parse_like(&like, s)
                        .ok()
                        .filter(|v| v.is_number())
                        .ok_or_else(|| format!("expected a list of {kind}, got `{raw}`"))
                })
                .collect();
            Value::Array(items?)
        }
        // Strings, enums and unset optionals: numbers stay numbers so an `Option<f64>` can be set.
        Value::Null => match raw.parse::<f64>() {
            Ok(v) => serde_json::Number::from_f64(v)
                .map(Value::Number)
                .unwrap_or(Value::String(raw.into())),
            Err(_) => Value::String(raw.into()),
        },
        _ => Value::String(raw.into()),
    })
}

/// Every leaf of a JSON value by its dotted path (`train.lr`, as overrides name a key), rendered
/// as JSON; sorted: how two configs are compared key by key (`ipirm compare`, the ranks'
/// settings check).
pub fn json_leaves(v: &serde_json::Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let path = match prefix {
                        "" => k.clone(),
                        p => format!("{p}.{k}"),
                    };
                    walk(&path, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}
