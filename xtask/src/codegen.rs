//! The Kafka codec generator: reads the protocol's JSON message specs and writes one Rust module
//! per message into `crates/wire/src/messages/`, plus `mod.rs` with the api key table and the
//! request/response enums.
//!
//! The generated code depends only on `wire::codec`. It is committed, so a fresh clone builds
//! without the specs; `tests::generated_code_is_up_to_date` fails when regenerating would change it.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    api_key: Option<i16>,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    valid_versions: String,
    #[serde(default)]
    flexible_versions: Option<String>,
    #[serde(default)]
    fields: Vec<Field>,
    #[serde(default)]
    common_structs: Vec<StructSpec>,
}

#[derive(Deserialize)]
struct StructSpec {
    name: String,
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Field {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    versions: Option<String>,
    #[serde(default)]
    nullable_versions: Option<String>,
    #[serde(default)]
    tagged_versions: Option<String>,
    #[serde(default)]
    tag: Option<Value>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    flexible_versions: Option<String>,
    #[serde(default)]
    fields: Option<Vec<Field>>,
    #[serde(default)]
    about: Option<String>,
}

/// An inclusive version range; `lo > hi` is the empty range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Range {
    lo: i16,
    hi: i16,
}

impl Range {
    const NONE: Range = Range { lo: 1, hi: 0 };

    fn parse(s: &str) -> Result<Range> {
        let s = s.trim();
        if s == "none" || s.is_empty() {
            return Ok(Range::NONE);
        }
        if let Some(lo) = s.strip_suffix('+') {
            return Ok(Range {
                lo: lo.trim().parse()?,
                hi: i16::MAX,
            });
        }
        if let Some((lo, hi)) = s.split_once('-') {
            return Ok(Range {
                lo: lo.trim().parse()?,
                hi: hi.trim().parse()?,
            });
        }
        let v = s.parse()?;
        Ok(Range { lo: v, hi: v })
    }

    fn intersect(self, o: Range) -> Range {
        Range {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        }
    }

    fn is_empty(self) -> bool {
        self.lo > self.hi
    }

    /// A Rust boolean expression in `version` that is true exactly in `self`, given that
    /// `version` lies in `valid`.
    fn cond(self, valid: Range) -> String {
        let r = self.intersect(valid);
        if r.is_empty() {
            return "false".into();
        }
        let mut parts = vec![];
        if r.lo > valid.lo {
            parts.push(format!("version >= {}", r.lo));
        }
        if r.hi < valid.hi {
            parts.push(format!("version <= {}", r.hi));
        }
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" && ")
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float64,
    Str,
    Bytes,
    Records,
    Uuid,
    Struct(String),
    Array(Box<Ty>),
}

impl Ty {
    fn parse(s: &str) -> Result<Ty> {
        if let Some(inner) = s.strip_prefix("[]") {
            return Ok(Ty::Array(Box::new(Ty::parse(inner)?)));
        }
        Ok(match s {
            "bool" => Ty::Bool,
            "int8" => Ty::Int8,
            "int16" => Ty::Int16,
            "uint16" => Ty::Uint16,
            "int32" => Ty::Int32,
            "uint32" => Ty::Uint32,
            "int64" => Ty::Int64,
            "float64" => Ty::Float64,
            "string" => Ty::Str,
            "bytes" => Ty::Bytes,
            "records" => Ty::Records,
            "uuid" => Ty::Uuid,
            s if s.starts_with(|c: char| c.is_ascii_uppercase()) => Ty::Struct(s.to_string()),
            other => bail!("unknown type {other}"),
        })
    }

    fn rust(&self) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::Int8 => "i8".into(),
            Ty::Int16 => "i16".into(),
            Ty::Uint16 => "u16".into(),
            Ty::Int32 => "i32".into(),
            Ty::Uint32 => "u32".into(),
            Ty::Int64 => "i64".into(),
            Ty::Float64 => "f64".into(),
            Ty::Str => "String".into(),
            Ty::Bytes | Ty::Records => "::bytes::Bytes".into(),
            Ty::Uuid => "c::Uuid".into(),
            Ty::Struct(n) => n.clone(),
            Ty::Array(t) => format!("Vec<{}>", t.rust()),
        }
    }
}

/// One field, resolved against the message it belongs to.
struct FieldInfo {
    kafka_name: String,
    rust_name: String,
    ty: Ty,
    versions: Range,
    nullable: Range,
    tagged: Range,
    tag: Option<u32>,
    /// Versions in which strings, bytes and arrays use the compact form; `None` means the
    /// message's flexible versions.
    flexible_override: Option<Range>,
    default: Option<Value>,
    about: Option<String>,
}

impl FieldInfo {
    fn is_option(&self, valid: Range) -> bool {
        !self.nullable.intersect(self.versions).intersect(valid).is_empty()
    }
}

struct Ctx {
    valid: Range,
    flexible: Range,
    out: String,
    defined: BTreeSet<String>,
    common: BTreeMap<String, Vec<Field>>,
    message: String,
    /// Responses also get an `ErrorCodes` impl, so the broker can count the errors it sends.
    response: bool,
}

pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut s = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    const KEYWORDS: &[&str] = &["type", "match", "ref", "mod", "fn", "struct", "async", "in", "loop"];
    if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn doc(out: &mut String, indent: &str, text: &Option<String>) {
    if let Some(t) = text {
        for line in t.lines() {
            let _ = writeln!(out, "{indent}/// {}", line.trim());
        }
    }
}

impl Ctx {
    fn field_info(&self, f: &Field) -> Result<FieldInfo> {
        let versions = Range::parse(f.versions.as_deref().unwrap_or("0+"))?;
        let tag = match &f.tag {
            None => None,
            Some(v) => Some(value_str(v).parse::<u32>().context("tag")?),
        };
        Ok(FieldInfo {
            kafka_name: f.name.clone(),
            rust_name: snake(&f.name),
            ty: Ty::parse(&f.ty).with_context(|| format!("field {}", f.name))?,
            versions,
            nullable: Range::parse(f.nullable_versions.as_deref().unwrap_or("none"))?,
            tagged: Range::parse(f.tagged_versions.as_deref().unwrap_or("none"))?,
            tag,
            flexible_override: f.flexible_versions.as_deref().map(Range::parse).transpose()?,
            default: f.default.clone(),
            about: f.about.clone(),
        })
    }

    fn field_type(&self, fi: &FieldInfo) -> String {
        if fi.is_option(self.valid) {
            format!("Option<{}>", fi.ty.rust())
        } else {
            fi.ty.rust()
        }
    }

    fn zero(&self, ty: &Ty) -> String {
        match ty {
            Ty::Bool => "false".into(),
            Ty::Float64 => "0.0".into(),
            Ty::Str => "String::new()".into(),
            Ty::Bytes | Ty::Records => "::bytes::Bytes::new()".into(),
            Ty::Uuid => "c::Uuid::ZERO".into(),
            Ty::Struct(n) => format!("{n}::default()"),
            Ty::Array(_) => "Vec::new()".into(),
            _ => "0".into(),
        }
    }

    fn default_expr(&self, fi: &FieldInfo) -> Result<String> {
        let option = fi.is_option(self.valid);
        let given = fi.default.as_ref().map(value_str);
        if given.as_deref() == Some("null") {
            if !option {
                bail!("{}: default null on a non-nullable field", fi.kafka_name);
            }
            return Ok("None".into());
        }
        let inner = match (&fi.ty, given) {
            (_, None) => {
                if option && matches!(fi.ty, Ty::Records | Ty::Struct(_)) {
                    return Ok("None".into());
                }
                // Kafka's generated default for a nullable string is "", but its brokers set
                // every `ErrorMessage` to null unless there is an error to describe, and
                // clients check for null. Defaulting to None makes a response built with
                // `..Default::default()` say nothing on success, as Kafka does.
                if option && matches!(fi.ty, Ty::Str) && fi.kafka_name == "ErrorMessage" {
                    return Ok("None".into());
                }
                self.zero(&fi.ty)
            }
            (Ty::Bool, Some(d)) => match d.as_str() {
                "true" | "false" => d,
                other => bail!("bad bool default {other}"),
            },
            (Ty::Str, Some(d)) => {
                if d.is_empty() {
                    "String::new()".into()
                } else {
                    format!("String::from({d:?})")
                }
            }
            (Ty::Float64, Some(d)) => format!("{:?}", d.parse::<f64>()?),
            (Ty::Int8 | Ty::Int16 | Ty::Uint16 | Ty::Int32 | Ty::Uint32 | Ty::Int64, Some(d)) => {
                let v: i64 = if let Some(hex) = d.strip_prefix("0x") {
                    i64::from_str_radix(hex, 16)?
                } else {
                    d.parse()?
                };
                v.to_string()
            }
            (t, Some(d)) => bail!("{}: default {d} for type {t:?} not supported", fi.kafka_name),
        };
        Ok(if option { format!("Some({inner})") } else { inner })
    }

    fn compact_expr(&self, fi: &FieldInfo) -> String {
        match fi.flexible_override {
            Some(r) => r.cond(self.valid),
            None => "flexible".into(),
        }
    }

    /// Collects every struct a list of fields defines, depth first.
    fn structs_in(&mut self, fields: &[Field], todo: &mut Vec<(String, Vec<Field>)>) -> Result<()> {
        for f in fields {
            let ty = Ty::parse(&f.ty)?;
            let name = match &ty {
                Ty::Struct(n) => Some(n.clone()),
                Ty::Array(inner) => match inner.as_ref() {
                    Ty::Struct(n) => Some(n.clone()),
                    _ => None,
                },
                _ => None,
            };
            let Some(name) = name else { continue };
            let body = match &f.fields {
                Some(fs) => fs.clone(),
                None => self
                    .common
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| anyhow!("{}: struct {name} has no definition", self.message))?,
            };
            if self.defined.insert(name.clone()) {
                self.structs_in(&body, todo)?;
                todo.push((name, body));
            }
        }
        Ok(())
    }

    fn gen_struct(&mut self, name: &str, fields: &[Field], top: Option<&Spec>) -> Result<()> {
        let infos: Vec<FieldInfo> = fields.iter().map(|f| self.field_info(f)).collect::<Result<_>>()?;
        let mut o = String::new();
        if let Some(spec) = top {
            let _ = writeln!(
                o,
                "/// {} (valid versions {}, flexible versions {}).",
                spec.name,
                spec.valid_versions,
                spec.flexible_versions.as_deref().unwrap_or("none")
            );
        }
        o.push_str("#[derive(Debug, Clone, PartialEq)]\n");
        o.push_str("#[cfg_attr(feature = \"arbitrary\", derive(arbitrary::Arbitrary))]\n");
        let _ = writeln!(o, "pub struct {name} {{");
        for fi in &infos {
            doc(&mut o, "    ", &fi.about);
            let ty = self.field_type(fi);
            match (&fi.ty, fi.is_option(self.valid)) {
                (Ty::Bytes | Ty::Records, false) => {
                    o.push_str("    #[cfg_attr(feature = \"arbitrary\", arbitrary(with = c::arbitrary_bytes))]\n")
                }
                (Ty::Bytes | Ty::Records, true) => {
                    o.push_str("    #[cfg_attr(feature = \"arbitrary\", arbitrary(with = c::arbitrary_opt_bytes))]\n")
                }
                _ => {}
            }
            let _ = writeln!(o, "    pub {}: {ty},", fi.rust_name);
        }
        o.push_str("}\n\n");

        // Default
        let _ = writeln!(
            o,
            "impl Default for {name} {{\n    fn default() -> Self {{\n        Self {{"
        );
        for fi in &infos {
            let _ = writeln!(o, "            {}: {},", fi.rust_name, self.default_expr(fi)?);
        }
        o.push_str("        }\n    }\n}\n\n");

        let flexible_cond = self.flexible.cond(self.valid);
        let check_version = |o: &mut String, err: &str| {
            if let Some(spec) = top {
                let _ = writeln!(
                    o,
                    "        if !({}..={}).contains(&version) {{\n            return Err(c::{err}::UnsupportedVersion {{ message: {:?}, version }});\n        }}",
                    self.valid.lo, self.valid.hi, spec.name
                );
            }
        };

        // Encode
        let _ = writeln!(o, "impl c::Encode for {name} {{");
        o.push_str("    fn encode(&self, buf: &mut ::bytes::BytesMut, version: i16) -> Result<(), c::EncodeError> {\n");
        check_version(&mut o, "EncodeError");
        let _ = writeln!(o, "        let flexible = {flexible_cond};");
        for fi in &infos {
            let present = fi.versions.cond(self.valid);
            if present == "false" {
                continue;
            }
            let cond = self.regular_cond(fi);
            if cond == "false" {
                continue;
            }
            let body = self.encode_field(fi, &format!("self.{}", fi.rust_name), "buf", name)?;
            wrap_if(&mut o, &cond, &body, 2);
        }
        let mut tagged: Vec<&FieldInfo> = infos.iter().filter(|f| !f.tagged.is_empty()).collect();
        tagged.sort_by_key(|f| f.tag);
        if self.flexible.is_empty() {
            // no tagged fields section
        } else {
            o.push_str("        if flexible {\n");
            if tagged.is_empty() {
                o.push_str("            c::put_uvarint(buf, 0);\n");
            } else {
                o.push_str("            let mut tagged_count = 0u32;\n");
                for fi in &tagged {
                    let cond = self.tagged_present(fi)?;
                    let _ = writeln!(
                        o,
                        "            if {cond} {{\n                tagged_count += 1;\n            }}"
                    );
                }
                o.push_str("            c::put_uvarint(buf, tagged_count);\n");
                for fi in &tagged {
                    let cond = self.tagged_present(fi)?;
                    let tag = fi
                        .tag
                        .ok_or_else(|| anyhow!("{}: tagged field without tag", fi.kafka_name))?;
                    let body = self.encode_field(fi, &format!("self.{}", fi.rust_name), "&mut tmp", name)?;
                    let _ = writeln!(
                        o,
                        "            if {cond} {{\n                c::put_uvarint(buf, {tag});\n                let mut tmp = ::bytes::BytesMut::new();\n{}                c::put_uvarint(buf, tmp.len() as u32);\n                buf.extend_from_slice(&tmp);\n            }}",
                        indent(&body, 4)
                    );
                }
            }
            o.push_str("        }\n");
        }
        o.push_str("        Ok(())\n    }\n}\n\n");

        // Decode
        let _ = writeln!(o, "impl c::Decode for {name} {{");
        o.push_str("    fn decode(buf: &mut ::bytes::Bytes, version: i16) -> Result<Self, c::DecodeError> {\n");
        check_version(&mut o, "DecodeError");
        let _ = writeln!(o, "        let flexible = {flexible_cond};");
        o.push_str("        let mut this = Self::default();\n");
        for fi in &infos {
            let present = fi.versions.cond(self.valid);
            if present == "false" {
                continue;
            }
            let cond = self.regular_cond(fi);
            if cond == "false" {
                continue;
            }
            let expr = self.decode_field(fi, "buf")?;
            wrap_if(&mut o, &cond, &format!("this.{} = {expr};\n", fi.rust_name), 2);
        }
        if !self.flexible.is_empty() {
            o.push_str("        if flexible {\n");
            o.push_str("            let tagged_count = c::get_uvarint(buf)?;\n");
            o.push_str("            for _ in 0..tagged_count {\n");
            o.push_str("                let tag = c::get_uvarint(buf)?;\n");
            o.push_str("                let size = c::get_uvarint(buf)? as usize;\n");
            if tagged.is_empty() {
                o.push_str("                let _ = (tag, c::take(buf, size)?);\n");
            } else {
                o.push_str("                let mut field = c::take(buf, size)?;\n");
                o.push_str("                match tag {\n");
                for fi in &tagged {
                    let cond = fi.tagged.intersect(fi.versions).cond(self.valid);
                    let tag = fi.tag.unwrap_or(0);
                    let expr = self.decode_field(fi, "&mut field")?;
                    let guard = if cond == "true" {
                        String::new()
                    } else {
                        format!(" if {cond}")
                    };
                    let _ = writeln!(o, "                    {tag}{guard} => this.{} = {expr},", fi.rust_name);
                }
                o.push_str("                    _ => {}\n                }\n");
            }
            o.push_str("            }\n        }\n");
        }
        o.push_str("        Ok(this)\n    }\n}\n\n");

        if let Some(spec) = top {
            let _ = writeln!(
                o,
                "impl c::Message for {name} {{\n    const NAME: &'static str = {:?};\n    const MIN_VERSION: i16 = {};\n    const MAX_VERSION: i16 = {};\n    const FLEXIBLE_MIN: i16 = {};\n}}\n",
                spec.name,
                self.valid.lo,
                self.valid.hi,
                if self.flexible.is_empty() { i16::MAX } else { self.flexible.lo }
            );
            if let Some(k) = spec.api_key {
                let _ = writeln!(
                    o,
                    "impl c::ApiMessage for {name} {{\n    const API_KEY: i16 = {k};\n}}\n"
                );
            }
        }
        if self.response {
            self.gen_error_codes(&mut o, name, &infos);
        }
        self.out.push_str(&o);
        Ok(())
    }

    /// `impl ErrorCodes`: calls `f` with every non-zero `*ErrorCode` field, in this struct and in
    /// the structs it holds.
    fn gen_error_codes(&self, o: &mut String, name: &str, infos: &[FieldInfo]) {
        let mut body = String::new();
        for fi in infos {
            let field = &fi.rust_name;
            let option = fi.is_option(self.valid);
            match &fi.ty {
                Ty::Int16 if fi.kafka_name.ends_with("ErrorCode") && !option => {
                    let _ = writeln!(
                        body,
                        "        if self.{field} != 0 {{\n            f(self.{field});\n        }}"
                    );
                }
                Ty::Struct(_) if option => {
                    let _ = writeln!(body, "        if let Some(x) = &self.{field} {{\n            c::ErrorCodes::error_codes(x, f);\n        }}");
                }
                Ty::Struct(_) => {
                    let _ = writeln!(body, "        c::ErrorCodes::error_codes(&self.{field}, f);");
                }
                Ty::Array(inner) if matches!(inner.as_ref(), Ty::Struct(_)) => {
                    let items = if option {
                        format!("self.{field}.iter().flatten()")
                    } else {
                        format!("&self.{field}")
                    };
                    let _ = writeln!(
                        body,
                        "        for x in {items} {{\n            c::ErrorCodes::error_codes(x, f);\n        }}"
                    );
                }
                _ => {}
            }
        }
        let f = if body.is_empty() { "_f" } else { "f" };
        let _ = writeln!(
            o,
            "impl c::ErrorCodes for {name} {{\n    fn error_codes(&self, {f}: &mut dyn FnMut(i16)) {{\n{body}    }}\n}}\n"
        );
    }

    /// The versions in which a field sits in the fixed part of the message (not tagged).
    fn regular_cond(&self, fi: &FieldInfo) -> String {
        let present = fi.versions.intersect(self.valid);
        let tagged = fi.tagged.intersect(present);
        if tagged.is_empty() {
            present.cond(self.valid)
        } else if tagged == present {
            "false".into()
        } else {
            format!("({}) && !({})", present.cond(self.valid), tagged.cond(self.valid))
        }
    }

    fn tagged_present(&self, fi: &FieldInfo) -> Result<String> {
        let cond = fi.tagged.intersect(fi.versions).cond(self.valid);
        let default = self.default_expr(fi)?;
        let differs = match (&fi.ty, fi.is_option(self.valid)) {
            (Ty::Array(_), false) => format!("!self.{}.is_empty()", fi.rust_name),
            _ => format!("self.{} != {default}", fi.rust_name),
        };
        Ok(if cond == "true" {
            differs
        } else {
            format!("({cond}) && {differs}")
        })
    }

    /// Statements that write field `fi`, held at place expression `place`, into `buf`.
    fn encode_field(&self, fi: &FieldInfo, place: &str, buf: &str, owner: &str) -> Result<String> {
        let compact = self.compact_expr(fi);
        if fi.is_option(self.valid) {
            let nullable = fi.nullable.cond(self.valid);
            let null = match &fi.ty {
                Ty::Str => format!("c::put_null_string({buf}, {compact});"),
                Ty::Bytes | Ty::Records => format!("c::put_null_bytes({buf}, {compact});"),
                Ty::Array(_) => format!("c::put_null_array({buf}, {compact});"),
                Ty::Struct(_) => format!("c::put_i8({buf}, -1);"),
                other => bail!("nullable {other:?} is not supported"),
            };
            let some = match &fi.ty {
                Ty::Struct(_) => format!(
                    "if {nullable} {{\n    c::put_i8({buf}, 1);\n}}\n{}",
                    self.encode_value(&fi.ty, "v", buf, &compact)
                ),
                t => self.encode_value(t, "v", buf, &compact),
            };
            let err = format!(
                "return Err(c::EncodeError::NullNotAllowed(\"{owner}.{}\"));",
                fi.kafka_name
            );
            let none = if nullable == "true" {
                null
            } else {
                format!("if {nullable} {{\n    {null}\n}} else {{\n    {err}\n}}")
            };
            Ok(format!(
                "match &{place} {{\n    Some(v) => {{\n{}    }}\n    None => {{\n{}    }}\n}}\n",
                indent(&some, 2),
                indent(&none, 2)
            ))
        } else {
            Ok(self.encode_value(&fi.ty, &format!("&{place}"), buf, &compact))
        }
    }

    /// Statements that write a non-null value of type `ty`; `r` is an expression of type `&T`.
    fn encode_value(&self, ty: &Ty, r: &str, buf: &str, compact: &str) -> String {
        // `r` is `&place` or a reference variable: write `place` / `*var` for copies and
        // `place.len()` / `var.len()` for method calls.
        let (val, obj) = match r.strip_prefix('&') {
            Some(place) => (place.to_string(), place.to_string()),
            None => (format!("*{r}"), r.to_string()),
        };
        match ty {
            Ty::Bool => format!("c::put_bool({buf}, {val});\n"),
            Ty::Int8 => format!("c::put_i8({buf}, {val});\n"),
            Ty::Int16 => format!("c::put_i16({buf}, {val});\n"),
            Ty::Uint16 => format!("c::put_u16({buf}, {val});\n"),
            Ty::Int32 => format!("c::put_i32({buf}, {val});\n"),
            Ty::Uint32 => format!("c::put_u32({buf}, {val});\n"),
            Ty::Int64 => format!("c::put_i64({buf}, {val});\n"),
            Ty::Float64 => format!("c::put_f64({buf}, {val});\n"),
            Ty::Uuid => format!("c::put_uuid({buf}, {r});\n"),
            Ty::Str => format!("c::put_string({buf}, {r}, {compact})?;\n"),
            Ty::Bytes => format!("c::put_bytes({buf}, {r}, {compact})?;\n"),
            Ty::Records => format!("c::put_records({buf}, {r}, {compact})?;\n"),
            Ty::Struct(_) => format!("c::Encode::encode({r}, {buf}, version)?;\n"),
            Ty::Array(inner) => format!(
                "c::put_array_len({buf}, {obj}.len(), {compact})?;\nfor item in {obj}.iter() {{\n{}}}\n",
                indent(&self.encode_value(inner, "item", buf, compact), 1)
            ),
        }
    }

    /// An expression that reads field `fi` from `buf`, of the field's Rust type.
    fn decode_field(&self, fi: &FieldInfo, buf: &str) -> Result<String> {
        let compact = self.compact_expr(fi);
        if !fi.is_option(self.valid) {
            return Ok(self.decode_value(&fi.ty, buf, &compact));
        }
        let nullable = fi.nullable.cond(self.valid);
        let maybe = match &fi.ty {
            Ty::Str => format!("c::get_nullable_string({buf}, {compact})?"),
            Ty::Bytes | Ty::Records => format!("c::get_nullable_bytes({buf}, {compact})?"),
            Ty::Array(inner) => format!(
                "match c::get_array_len({buf}, {compact})? {{\n    None => None,\n    Some(n) => Some({}),\n}}",
                self.decode_array_body(inner, buf, &compact)
            ),
            Ty::Struct(n) => format!(
                "if c::get_i8({buf})? < 0 {{\n    None\n}} else {{\n    Some(<{n} as c::Decode>::decode({buf}, version)?)\n}}"
            ),
            other => bail!("nullable {other:?} is not supported"),
        };
        if nullable == "true" {
            return Ok(maybe);
        }
        let strict = format!("Some({})", self.decode_value(&fi.ty, buf, &compact));
        Ok(format!(
            "if {nullable} {{\n    {}\n}} else {{\n    {strict}\n}}",
            maybe.replace('\n', "\n    ")
        ))
    }

    fn decode_array_body(&self, inner: &Ty, buf: &str, compact: &str) -> String {
        format!(
            "{{\n    let mut v = Vec::with_capacity(c::capacity_for::<{}>(n, {buf}));\n    for _ in 0..n {{\n        v.push({});\n    }}\n    v\n}}",
            inner.rust(),
            self.decode_value(inner, buf, compact).replace('\n', "\n        ")
        )
    }

    fn decode_value(&self, ty: &Ty, buf: &str, compact: &str) -> String {
        match ty {
            Ty::Bool => format!("c::get_bool({buf})?"),
            Ty::Int8 => format!("c::get_i8({buf})?"),
            Ty::Int16 => format!("c::get_i16({buf})?"),
            Ty::Uint16 => format!("c::get_u16({buf})?"),
            Ty::Int32 => format!("c::get_i32({buf})?"),
            Ty::Uint32 => format!("c::get_u32({buf})?"),
            Ty::Int64 => format!("c::get_i64({buf})?"),
            Ty::Float64 => format!("c::get_f64({buf})?"),
            Ty::Uuid => format!("c::get_uuid({buf})?"),
            Ty::Str => format!("c::get_string({buf}, {compact})?"),
            Ty::Bytes | Ty::Records => format!("c::get_bytes({buf}, {compact})?"),
            Ty::Struct(n) => format!("<{n} as c::Decode>::decode({buf}, version)?"),
            Ty::Array(inner) => format!(
                "match c::get_array_len({buf}, {compact})? {{\n    None => return Err(c::DecodeError::UnexpectedNull(-1)),\n    Some(n) => {},\n}}",
                self.decode_array_body(inner, buf, compact)
            ),
        }
    }
}

fn indent(s: &str, levels: usize) -> String {
    let pad = "    ".repeat(levels);
    let mut out = String::new();
    for line in s.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{pad}{line}");
        }
    }
    out
}

fn wrap_if(o: &mut String, cond: &str, body: &str, levels: usize) {
    if cond == "true" {
        o.push_str(&indent(body, levels));
    } else {
        o.push_str(&indent(&format!("if {cond} {{\n{}}}\n", indent(body, 1)), levels));
    }
}

struct Generated {
    module: String,
    spec_name: String,
    kind: String,
    api_key: Option<i16>,
    valid: Range,
    flexible: Range,
}

/// `source` names the spec family in the generated file's header ("message", "record").
fn gen_spec(spec: &Spec, source: &str) -> Result<(String, Generated)> {
    let valid = Range::parse(&spec.valid_versions)?;
    let flexible = Range::parse(spec.flexible_versions.as_deref().unwrap_or("none"))?;
    let mut ctx = Ctx {
        valid,
        flexible,
        out: String::new(),
        defined: BTreeSet::new(),
        common: spec
            .common_structs
            .iter()
            .map(|s| (s.name.clone(), s.fields.clone()))
            .collect(),
        message: spec.name.clone(),
        response: spec.kind == "response",
    };
    let _ = writeln!(
        ctx.out,
        "//! {} — generated by `cargo xtask codegen` from the Kafka {source} spec; do not edit.\n",
        spec.name
    );
    ctx.out
        .push_str("#![allow(unused_variables, unused_mut, clippy::all)]\n\nuse crate::codec as c;\n\n");
    ctx.gen_struct(&spec.name, &spec.fields, Some(spec))?;
    let mut todo = vec![];
    ctx.defined.insert(spec.name.clone());
    ctx.structs_in(&spec.fields, &mut todo)?;
    for (name, fields) in todo {
        ctx.gen_struct(&name, &fields, None)?;
    }
    let g = Generated {
        module: snake(&spec.name),
        spec_name: spec.name.clone(),
        kind: spec.kind.clone(),
        api_key: spec.api_key,
        valid,
        flexible,
    };
    Ok((ctx.out, g))
}

fn gen_mod(gens: &[Generated]) -> Result<String> {
    let mut o = String::new();
    o.push_str(
        "//! Every Kafka message, generated by `cargo xtask codegen` from the protocol's JSON specs; do not edit.\n\n",
    );
    o.push_str(
        "#![allow(clippy::all)]\n\nuse crate::codec as c;\n\npub mod error_code;\npub use error_code::ErrorCode;\n\n",
    );
    for g in gens {
        let _ = writeln!(o, "pub mod {};", g.module);
    }
    o.push('\n');
    for g in gens {
        let _ = writeln!(o, "pub use {}::{};", g.module, g.spec_name);
    }
    o.push('\n');

    // api keys: request and response per key
    let mut apis: BTreeMap<i16, (Option<&Generated>, Option<&Generated>)> = BTreeMap::new();
    for g in gens {
        if let Some(k) = g.api_key {
            let e = apis.entry(k).or_default();
            match g.kind.as_str() {
                "request" => e.0 = Some(g),
                "response" => e.1 = Some(g),
                _ => {}
            }
        }
    }
    let mut rows = vec![];
    for (k, (req, resp)) in &apis {
        let (Some(req), Some(resp)) = (req, resp) else {
            bail!("api key {k} lacks a request or a response");
        };
        let variant = req
            .spec_name
            .strip_suffix("Request")
            .unwrap_or(&req.spec_name)
            .to_string();
        rows.push((*k, variant, *req, *resp));
    }

    o.push_str("/// Every API of the protocol, by its numeric key.\n");
    o.push_str(
        "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(i16)]\npub enum ApiKey {\n",
    );
    for (k, v, _, _) in &rows {
        let _ = writeln!(o, "    {v} = {k},");
    }
    o.push_str("}\n\n");

    o.push_str("impl ApiKey {\n    pub const ALL: &'static [ApiKey] = &[\n");
    for (_, v, _, _) in &rows {
        let _ = writeln!(o, "        ApiKey::{v},");
    }
    o.push_str("    ];\n\n");
    o.push_str("    pub fn from_i16(key: i16) -> Option<ApiKey> {\n        match key {\n");
    for (k, v, _, _) in &rows {
        let _ = writeln!(o, "            {k} => Some(ApiKey::{v}),");
    }
    o.push_str("            _ => None,\n        }\n    }\n\n");
    o.push_str("    pub fn name(self) -> &'static str {\n        match self {\n");
    for (_, v, _, _) in &rows {
        let _ = writeln!(o, "            ApiKey::{v} => {v:?},");
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// The versions of the request the codec can read and write: (min, max).\n");
    o.push_str("    pub fn versions(self) -> (i16, i16) {\n        match self {\n");
    for (_, v, req, _) in &rows {
        let _ = writeln!(o, "            ApiKey::{v} => ({}, {}),", req.valid.lo, req.valid.hi);
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// The request header version that goes with `version` of this API's request.\n");
    o.push_str("    pub fn request_header_version(self, version: i16) -> i16 {\n        match self {\n");
    o.push_str("            // Version 0 of ControlledShutdown predates the client id in the header.\n");
    o.push_str("            ApiKey::ControlledShutdown if version == 0 => 0,\n");
    for (_, v, req, _) in &rows {
        if req.flexible.is_empty() {
            let _ = writeln!(o, "            ApiKey::{v} => 1,");
        } else {
            let _ = writeln!(
                o,
                "            ApiKey::{v} => if version >= {} {{ 2 }} else {{ 1 }},",
                req.flexible.lo
            );
        }
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// The response header version that goes with `version` of this API's response.\n");
    o.push_str("    pub fn response_header_version(self, version: i16) -> i16 {\n        match self {\n");
    o.push_str("            // ApiVersions responses always use header v0, so that a client that does not\n            // yet know the broker's versions can read the reply.\n");
    o.push_str("            ApiKey::ApiVersions => 0,\n");
    for (_, v, _, resp) in &rows {
        if v == "ApiVersions" {
            continue;
        }
        if resp.flexible.is_empty() {
            let _ = writeln!(o, "            ApiKey::{v} => 0,");
        } else {
            let _ = writeln!(
                o,
                "            ApiKey::{v} => if version >= {} {{ 1 }} else {{ 0 }},",
                resp.flexible.lo
            );
        }
    }
    o.push_str("        }\n    }\n}\n\n");

    for (label, idx) in [("Request", 0usize), ("Response", 1usize)] {
        let _ = writeln!(o, "/// The body of any {}, by api key.", label.to_lowercase());
        let _ = writeln!(o, "#[derive(Debug, Clone, PartialEq)]\npub enum {label}Body {{");
        for (_, v, req, resp) in &rows {
            let g = if idx == 0 { req } else { resp };
            let _ = writeln!(o, "    {v}({}),", g.spec_name);
        }
        o.push_str("}\n\n");
        let _ = writeln!(o, "impl {label}Body {{");
        o.push_str("    pub fn api_key(&self) -> ApiKey {\n        match self {\n");
        for (_, v, _, _) in &rows {
            let _ = writeln!(o, "            {label}Body::{v}(_) => ApiKey::{v},");
        }
        o.push_str("        }\n    }\n\n");
        o.push_str("    pub fn decode(api_key: ApiKey, buf: &mut ::bytes::Bytes, version: i16) -> Result<Self, c::DecodeError> {\n        Ok(match api_key {\n");
        for (_, v, _, _) in &rows {
            let _ = writeln!(
                o,
                "            ApiKey::{v} => {label}Body::{v}(c::Decode::decode(buf, version)?),"
            );
        }
        o.push_str("        })\n    }\n\n");
        o.push_str("    pub fn encode(&self, buf: &mut ::bytes::BytesMut, version: i16) -> Result<(), c::EncodeError> {\n        match self {\n");
        for (_, v, _, _) in &rows {
            let _ = writeln!(
                o,
                "            {label}Body::{v}(m) => c::Encode::encode(m, buf, version),"
            );
        }
        o.push_str("        }\n    }\n}\n\n");
    }

    // A list every test can iterate over: (module path of the type, api key or -1).
    o.push_str("/// Calls `$m!(Type)` for every generated top-level message (for tests and fuzzing).\n");
    o.push_str("#[macro_export]\nmacro_rules! for_each_message {\n    ($m:ident) => {\n");
    for g in gens {
        let _ = writeln!(o, "        $m!({});", g.spec_name);
    }
    o.push_str("    };\n}\n");
    Ok(o)
}

/// `ErrorCode`: every protocol error code from `errors.tsv` (code, NAME, retriable).
fn gen_errors(tsv: &str) -> Result<String> {
    let mut rows = vec![];
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [code, name, retriable] = cols[..] else {
            bail!("errors.tsv: bad line {line:?}")
        };
        let code: i16 = code.parse().with_context(|| format!("errors.tsv: code {code}"))?;
        let variant: String = name
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase())
                    .unwrap_or_default()
            })
            .collect();
        rows.push((code, variant, name.to_string(), retriable == "yes"));
    }
    let mut o = String::from(
        "//! Every error code of the protocol, generated by `cargo xtask codegen` from errors.tsv; do not edit.\n\n",
    );
    o.push_str("/// A Kafka error code. `ErrorCode::None` (0) is success.\n");
    o.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\n#[repr(i16)]\npub enum ErrorCode {\n");
    for (code, v, _, _) in &rows {
        let _ = writeln!(o, "    {v} = {code},");
    }
    o.push_str("}\n\nimpl ErrorCode {\n    pub fn code(self) -> i16 {\n        self as i16\n    }\n\n");
    o.push_str("    pub fn from_code(code: i16) -> Option<ErrorCode> {\n        match code {\n");
    for (code, v, _, _) in &rows {
        let _ = writeln!(o, "            {code} => Some(ErrorCode::{v}),");
    }
    o.push_str("            _ => None,\n        }\n    }\n\n    /// The name clients print, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.\n");
    o.push_str("    pub fn name(self) -> &'static str {\n        match self {\n");
    for (_, v, name, _) in &rows {
        let _ = writeln!(o, "            ErrorCode::{v} => {name:?},");
    }
    o.push_str(
        "        }\n    }\n\n    /// Whether clients retry on this error.\n    pub fn is_retriable(self) -> bool {\n",
    );
    let retriable: Vec<String> = rows
        .iter()
        .filter(|r| r.3)
        .map(|r| format!("ErrorCode::{}", r.1))
        .collect();
    let _ = writeln!(o, "        matches!(self, {})\n    }}\n}}", retriable.join(" | "));
    Ok(o)
}

fn rustfmt(src: &str) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--config", "max_width=120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running rustfmt (is the rustfmt component installed?)")?;
    child.stdin.take().context("rustfmt stdin")?.write_all(src.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("rustfmt failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Sluice's changes to Kafka's specs (`xtask/spec-patches.json`: later Kafka releases'
/// protocol changes Sluice speaks), applied to the spec they name.
fn patch(mut spec: Value) -> Result<Value> {
    let patches: Value = serde_json::from_str(include_str!("../spec-patches.json")).context("spec-patches.json")?;
    let Some(name) = spec.get("name").and_then(|n| n.as_str()).map(str::to_string) else {
        return Ok(spec);
    };
    let Some(p) = patches.get(&name) else { return Ok(spec) };
    if let Some(v) = p.get("validVersions") {
        spec["validVersions"] = v.clone();
    }
    for add in p.get("add").and_then(|a| a.as_array()).into_iter().flatten() {
        let path = add["path"].as_str().context("an added field needs a path")?;
        let mut fields = spec.get_mut("fields").context("no fields")?;
        for step in path.split('.').filter(|s| !s.is_empty()) {
            let list = fields.as_array_mut().context("fields is not a list")?;
            let next = list
                .iter_mut()
                .find(|f| f["name"] == step)
                .with_context(|| format!("{name}: no field {step} on the path {path}"))?;
            fields = next
                .get_mut("fields")
                .with_context(|| format!("{name}: {step} has no fields"))?;
        }
        fields
            .as_array_mut()
            .context("fields is not a list")?
            .push(add["field"].clone());
    }
    Ok(spec)
}

/// Every spec in `dir`, sorted by file name (patched: see `patch`).
fn read_specs(dir: &Path) -> Result<Vec<(PathBuf, Spec)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut specs = vec![];
    for p in paths {
        let text = std::fs::read_to_string(&p)?;
        // Through `Value` first: a few specs repeat a key inside one field, which the typed
        // deserializer rejects and Kafka's own generator tolerates (the last one wins).
        let value: Value =
            serde_json::from_str(&strip_comments(&text)).with_context(|| format!("parsing {}", p.display()))?;
        let value = patch(value).with_context(|| format!("patching {}", p.display()))?;
        let spec: Spec = serde_json::from_value(value).with_context(|| format!("reading {}", p.display()))?;
        specs.push((p, spec));
    }
    Ok(specs)
}

/// Generates every file: (file name relative to the messages directory, contents).
pub fn generate(spec_dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = vec![];
    let mut gens = vec![];
    for (p, spec) in read_specs(spec_dir)? {
        let (src, g) = gen_spec(&spec, "message").with_context(|| format!("generating {}", p.display()))?;
        files.push((format!("{}.rs", g.module), rustfmt(&src)?));
        gens.push(g);
    }
    files.push(("mod.rs".into(), rustfmt(&gen_mod(&gens)?)?));
    let errors = std::fs::read_to_string(spec_dir.join("errors.tsv")).context("reading errors.tsv")?;
    files.push(("error_code.rs".into(), rustfmt(&gen_errors(&errors)?)?));
    Ok(files)
}

/// The record spec folders: (folder, the log its records are written to).
pub const RECORD_FOLDERS: &[(&str, &str)] = &[
    ("group", "__consumer_offsets"),
    ("metadata", "__cluster_metadata"),
    ("share", "__share_group_state"),
    ("transaction", "__transaction_state"),
];

/// Generates the record types from Kafka's record specs (`kafka-record-specs/<folder>/*.json`):
/// (file name relative to `crates/wire/src/kafka_records`, contents).
pub fn generate_records(spec_dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = vec![];
    let mut all = vec![];
    for (folder, log) in RECORD_FOLDERS {
        let mut gens = vec![];
        for (p, spec) in read_specs(&spec_dir.join(folder))? {
            let expected = if *folder == "metadata" { "metadata" } else { "data" };
            if spec.kind != expected {
                bail!("{}: type {:?}, expected {expected:?}", p.display(), spec.kind);
            }
            let (src, g) = gen_spec(&spec, "record").with_context(|| format!("generating {}", p.display()))?;
            files.push((format!("{folder}/{}.rs", g.module), rustfmt(&src)?));
            all.push(format!("{folder}::{}", g.spec_name));
            gens.push(g);
        }
        let m = if *folder == "metadata" {
            gen_metadata_mod(&gens)?
        } else {
            gen_coordinator_mod(log, &gens)?
        };
        files.push((format!("{folder}/mod.rs"), rustfmt(&m)?));
    }
    files.push(("mod.rs".into(), rustfmt(&gen_records_root(&all))?));
    Ok(files)
}

/// `kafka_records/mod.rs`; `types` are the top-level types as `folder::Type`.
fn gen_records_root(types: &[String]) -> String {
    let mut o = String::new();
    o.push_str(
        "//! The records Kafka writes to its own logs, generated by `cargo xtask codegen` from Kafka's record
//! specs (`kafka-record-specs/`); do not edit.
//!
//! - `metadata`: the cluster metadata log (`__cluster_metadata`), framed as Kafka's
//!   `MetadataRecordSerde` frames them (`metadata::write_record`, `metadata::read_record`);
//! - `group`, `transaction`, `share`: the keys and values of `__consumer_offsets`,
//!   `__transaction_state` and `__share_group_state`, each starting with an int16 version
//!   (`RecordKey::read`/`write` and `RecordValue::read`/`write` in each module).
//!
//! The module is `kafka_records`, not `records`: `crate::records` is the record *batch* format
//! (v2 batches and the records inside them), in which these types travel as keys and values.

",
    );
    o.push_str("#![allow(clippy::all)]\n\nuse crate::codec as c;\n\n");
    for (folder, _) in RECORD_FOLDERS {
        let _ = writeln!(o, "pub mod {folder};");
    }
    o.push_str(
        "
/// Writes an int16 `version`, then `message` in that version: how every key and value of the
/// coordinator logs is framed (a key's version is its record type).
pub fn write_versioned<T: c::Message>(
    buf: &mut ::bytes::BytesMut,
    message: &T,
    version: i16,
) -> Result<(), c::EncodeError> {
    if !(T::MIN_VERSION..=T::MAX_VERSION).contains(&version) {
        return Err(c::EncodeError::UnsupportedVersion { message: T::NAME, version });
    }
    c::put_i16(buf, version);
    message.encode(buf, version)
}

/// Reads an int16 version, then a `T` in that version.
pub fn read_versioned<T: c::Message>(buf: &mut ::bytes::Bytes) -> Result<(i16, T), c::DecodeError> {
    let version = c::get_i16(buf)?;
    Ok((version, T::decode(buf, version)?))
}

/// A key of a coordinator log, and the type of the values written under it.
pub trait CoordinatorKey: c::Message {
    type Value: c::Message;
}

/// Calls `$m!(path::to::Type)` for every generated record type (for tests and fuzzing).
#[macro_export]
macro_rules! for_each_kafka_record {
    ($m:ident) => {
",
    );
    for t in types {
        let _ = writeln!(o, "        $m!($crate::kafka_records::{t});");
    }
    o.push_str("    };\n}\n");
    o
}

/// `metadata/mod.rs`: the record type table, the enum of every record and Kafka's framing.
fn gen_metadata_mod(gens: &[Generated]) -> Result<String> {
    let mut o = String::new();
    o.push_str(
        "//! The records of the cluster metadata log (`__cluster_metadata`), generated by `cargo xtask
//! codegen` from Kafka's metadata record specs; do not edit.
//!
//! A record's value is framed as Kafka's `MetadataRecordSerde` frames it: an unsigned varint
//! frame version ([`FRAME_VERSION`]), an unsigned varint record type (the spec's `apiKey`), an
//! unsigned varint record version, then the record in that version.

",
    );
    o.push_str("#![allow(clippy::all)]\n\nuse crate::codec as c;\n\n");
    for g in gens {
        let _ = writeln!(o, "pub mod {};", g.module);
    }
    o.push('\n');
    for g in gens {
        let _ = writeln!(o, "pub use {}::{};", g.module, g.spec_name);
    }
    let mut rows: Vec<(i16, &Generated)> = vec![];
    for g in gens {
        let k = g
            .api_key
            .ok_or_else(|| anyhow!("{}: metadata record without apiKey", g.spec_name))?;
        if let Some((_, other)) = rows.iter().find(|(o, _)| *o == k) {
            bail!("record type {k} is both {} and {}", other.spec_name, g.spec_name);
        }
        if k < 0 {
            bail!("{}: negative record type", g.spec_name);
        }
        rows.push((k, g));
    }
    rows.sort_by_key(|r| r.0);
    o.push_str(
        "
/// The only frame version of metadata records there is.
pub const FRAME_VERSION: u32 = 1;

/// Every metadata record type, by its numeric id (the spec's `apiKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i16)]
pub enum MetadataRecordType {
",
    );
    for (k, g) in &rows {
        let _ = writeln!(o, "    {} = {k},", g.spec_name);
    }
    o.push_str("}\n\nimpl MetadataRecordType {\n    pub const ALL: &'static [MetadataRecordType] = &[\n");
    for (_, g) in &rows {
        let _ = writeln!(o, "        MetadataRecordType::{},", g.spec_name);
    }
    o.push_str("    ];\n\n    pub fn from_i16(id: i16) -> Option<MetadataRecordType> {\n        match id {\n");
    for (k, g) in &rows {
        let _ = writeln!(o, "            {k} => Some(MetadataRecordType::{}),", g.spec_name);
    }
    o.push_str(
        "            _ => None,\n        }\n    }\n\n    pub fn id(self) -> i16 {\n        self as i16\n    }\n\n",
    );
    o.push_str("    pub fn name(self) -> &'static str {\n        match self {\n");
    for (_, g) in &rows {
        let _ = writeln!(o, "            MetadataRecordType::{0} => {0:?},", g.spec_name);
    }
    o.push_str("        }\n    }\n\n    /// The versions the codec reads and writes: (min, max).\n");
    o.push_str("    pub fn versions(self) -> (i16, i16) {\n        match self {\n");
    for (_, g) in &rows {
        let _ = writeln!(
            o,
            "            MetadataRecordType::{} => ({}, {}),",
            g.spec_name, g.valid.lo, g.valid.hi
        );
    }
    o.push_str("        }\n    }\n}\n\n");
    o.push_str("/// A metadata record struct and its record type.\npub trait MetadataRecordMessage: c::Message {\n    const RECORD_TYPE: MetadataRecordType;\n}\n\n");
    for (_, g) in &rows {
        let _ = writeln!(
            o,
            "impl MetadataRecordMessage for {0} {{\n    const RECORD_TYPE: MetadataRecordType = MetadataRecordType::{0};\n}}\n",
            g.spec_name
        );
    }
    o.push_str("/// Any metadata record.\n#[derive(Debug, Clone, PartialEq)]\npub enum MetadataRecord {\n");
    for (_, g) in &rows {
        let _ = writeln!(o, "    {0}({0}),", g.spec_name);
    }
    o.push_str("}\n\n");
    for (_, g) in &rows {
        let _ = writeln!(
            o,
            "impl From<{0}> for MetadataRecord {{\n    fn from(r: {0}) -> Self {{\n        MetadataRecord::{0}(r)\n    }}\n}}\n",
            g.spec_name
        );
    }
    o.push_str("impl MetadataRecord {\n    pub fn record_type(&self) -> MetadataRecordType {\n        match self {\n");
    for (_, g) in &rows {
        let _ = writeln!(
            o,
            "            MetadataRecord::{0}(_) => MetadataRecordType::{0},",
            g.spec_name
        );
    }
    o.push_str(
        "        }\n    }\n\n    /// Reads the body of a record of type `record_type` in `version` (no framing).\n",
    );
    o.push_str("    pub fn decode(record_type: MetadataRecordType, buf: &mut ::bytes::Bytes, version: i16) -> Result<Self, c::DecodeError> {\n        Ok(match record_type {\n");
    for (_, g) in &rows {
        let _ = writeln!(
            o,
            "            MetadataRecordType::{0} => MetadataRecord::{0}(c::Decode::decode(buf, version)?),",
            g.spec_name
        );
    }
    o.push_str("        })\n    }\n\n    /// Writes the body in `version` (no framing).\n");
    o.push_str("    pub fn encode(&self, buf: &mut ::bytes::BytesMut, version: i16) -> Result<(), c::EncodeError> {\n        match self {\n");
    for (_, g) in &rows {
        let _ = writeln!(
            o,
            "            MetadataRecord::{}(r) => c::Encode::encode(r, buf, version),",
            g.spec_name
        );
    }
    o.push_str("        }\n    }\n\n");
    o.push_str(
        "    /// Writes the record in `version` with Kafka's metadata framing.
    pub fn write(&self, buf: &mut ::bytes::BytesMut, version: i16) -> Result<(), c::EncodeError> {
        let record_type = self.record_type();
        let (lo, hi) = record_type.versions();
        if !(lo..=hi).contains(&version) {
            return Err(c::EncodeError::UnsupportedVersion { message: record_type.name(), version });
        }
        put_frame(buf, record_type, version);
        self.encode(buf, version)
    }
}

fn put_frame(buf: &mut ::bytes::BytesMut, record_type: MetadataRecordType, version: i16) {
    c::put_uvarint(buf, FRAME_VERSION);
    c::put_uvarint(buf, record_type.id() as u32);
    c::put_uvarint(buf, version as u32);
}

/// Writes `record` in `version` with Kafka's metadata framing.
pub fn write_record<T: MetadataRecordMessage>(
    buf: &mut ::bytes::BytesMut,
    record: &T,
    version: i16,
) -> Result<(), c::EncodeError> {
    if !(T::MIN_VERSION..=T::MAX_VERSION).contains(&version) {
        return Err(c::EncodeError::UnsupportedVersion { message: T::NAME, version });
    }
    put_frame(buf, T::RECORD_TYPE, version);
    record.encode(buf, version)
}

/// Reads one framed metadata record: the record and the version it was written in. A frame
/// version other than [`FRAME_VERSION`], an unknown record type or a version the type does not
/// have is an error, as in Kafka.
pub fn read_record(buf: &mut ::bytes::Bytes) -> Result<(MetadataRecord, i16), c::DecodeError> {
    let frame = c::get_uvarint(buf)?;
    if frame != FRAME_VERSION {
        return Err(c::DecodeError::UnsupportedVersion {
            message: \"metadata record frame\",
            version: frame.min(i16::MAX as u32) as i16,
        });
    }
    let id = c::get_uvarint(buf)?;
    let record_type = i16::try_from(id)
        .ok()
        .and_then(MetadataRecordType::from_i16)
        .ok_or(c::DecodeError::UnknownRecordType { log: \"__cluster_metadata\", record_type: id as i64 })?;
    let version = c::get_uvarint(buf)?;
    let version = i16::try_from(version).map_err(|_| c::DecodeError::UnsupportedVersion {
        message: record_type.name(),
        version: i16::MAX,
    })?;
    Ok((MetadataRecord::decode(record_type, buf, version)?, version))
}
",
    );
    Ok(o)
}

/// `<folder>/mod.rs` of a coordinator log: the keys and values by record type, with their
/// int16 version prefix.
fn gen_coordinator_mod(log: &str, gens: &[Generated]) -> Result<String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "//! The keys and values of `{log}`, generated by `cargo xtask codegen` from Kafka's record specs;
//! do not edit.
//!
//! A key starts with an int16, its record type, which is also the version the key is written
//! in (each key spec's valid versions are the record types it has); the value is an int16
//! version followed by the value in that version (compact strings and tagged fields in its
//! flexible versions). A record without a value is a tombstone.

"
    );
    o.push_str("#![allow(clippy::all)]\n\nuse crate::codec as c;\n\n");
    for g in gens {
        let _ = writeln!(o, "pub mod {};", g.module);
    }
    o.push('\n');
    for g in gens {
        let _ = writeln!(o, "pub use {}::{};", g.module, g.spec_name);
    }
    // (record types, key, value), by record type.
    let mut pairs: Vec<(Range, &Generated, &Generated)> = vec![];
    for k in gens {
        let Some(base) = k.spec_name.strip_suffix("Key") else {
            continue;
        };
        let value_name = format!("{base}Value");
        let v = gens
            .iter()
            .find(|g| g.spec_name == value_name)
            .ok_or_else(|| anyhow!("{}: no {value_name}", k.spec_name))?;
        if k.valid.lo < 0 || k.valid.is_empty() {
            bail!("{}: bad record types {:?}", k.spec_name, k.valid);
        }
        if let Some((_, other, _)) = pairs.iter().find(|(r, _, _)| !r.intersect(k.valid).is_empty()) {
            bail!("{} and {} share a record type", other.spec_name, k.spec_name);
        }
        pairs.push((k.valid, k, v));
    }
    for g in gens {
        let paired = pairs
            .iter()
            .any(|(_, k, v)| k.spec_name == g.spec_name || v.spec_name == g.spec_name);
        if !paired {
            bail!("{}: neither a key nor the value of one", g.spec_name);
        }
    }
    pairs.sort_by_key(|p| p.0.lo);
    o.push('\n');
    for (_, k, v) in &pairs {
        let _ = writeln!(
            o,
            "impl super::CoordinatorKey for {} {{\n    type Value = {};\n}}\n",
            k.spec_name, v.spec_name
        );
    }
    let pattern = |r: Range| {
        if r.lo == r.hi {
            r.lo.to_string()
        } else {
            format!("{}..={}", r.lo, r.hi)
        }
    };
    let _ = writeln!(o, "/// Any key of `{log}`, by record type.");
    o.push_str("#[derive(Debug, Clone, PartialEq)]\npub enum RecordKey {\n");
    for (r, k, _) in &pairs {
        let types = if r.lo == r.hi {
            format!("Record type {}.", r.lo)
        } else {
            format!("Record types {} to {}.", r.lo, r.hi)
        };
        let _ = writeln!(o, "    /// {types}\n    {0}({0}),", k.spec_name);
    }
    o.push_str("}\n\n");
    let _ = writeln!(o, "/// Any value of `{log}`, by the record type of its key.");
    o.push_str("#[derive(Debug, Clone, PartialEq)]\npub enum RecordValue {\n");
    for (_, _, v) in &pairs {
        let _ = writeln!(o, "    {0}({0}),", v.spec_name);
    }
    o.push_str("}\n\n");
    for (_, k, _) in &pairs {
        let _ = writeln!(
            o,
            "impl From<{0}> for RecordKey {{\n    fn from(k: {0}) -> Self {{\n        RecordKey::{0}(k)\n    }}\n}}\n",
            k.spec_name
        );
    }
    for (_, _, v) in &pairs {
        let _ = writeln!(
            o,
            "impl From<{0}> for RecordValue {{\n    fn from(v: {0}) -> Self {{\n        RecordValue::{0}(v)\n    }}\n}}\n",
            v.spec_name
        );
    }
    o.push_str("impl RecordKey {\n    /// The record types this key is written with: (min, max); the latest is the one to write.\n");
    o.push_str("    pub fn record_types(&self) -> (i16, i16) {\n        match self {\n");
    for (r, k, _) in &pairs {
        let _ = writeln!(o, "            RecordKey::{}(_) => ({}, {}),", k.spec_name, r.lo, r.hi);
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// Writes the key: the int16 `record_type`, then the key in that version.\n");
    o.push_str("    pub fn write(&self, buf: &mut ::bytes::BytesMut, record_type: i16) -> Result<(), c::EncodeError> {\n        match self {\n");
    for (_, k, _) in &pairs {
        let _ = writeln!(
            o,
            "            RecordKey::{}(k) => super::write_versioned(buf, k, record_type),",
            k.spec_name
        );
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// Reads a key: its record type, then the key in that version.\n");
    o.push_str("    pub fn read(buf: &mut ::bytes::Bytes) -> Result<(i16, RecordKey), c::DecodeError> {\n");
    o.push_str("        let record_type = c::get_i16(buf)?;\n        let key = match record_type {\n");
    for (r, k, _) in &pairs {
        let _ = writeln!(
            o,
            "            {} => RecordKey::{}(c::Decode::decode(buf, record_type)?),",
            pattern(*r),
            k.spec_name
        );
    }
    let _ = writeln!(
        o,
        "            _ => return Err(c::DecodeError::UnknownRecordType {{ log: {log:?}, record_type: record_type as i64 }}),"
    );
    o.push_str("        };\n        Ok((record_type, key))\n    }\n}\n\n");
    o.push_str("impl RecordValue {\n    /// The versions of this value: (min, max).\n");
    o.push_str("    pub fn versions(&self) -> (i16, i16) {\n        match self {\n");
    for (_, _, v) in &pairs {
        let _ = writeln!(
            o,
            "            RecordValue::{}(_) => ({}, {}),",
            v.spec_name, v.valid.lo, v.valid.hi
        );
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// Writes the value: the int16 `version`, then the value in that version.\n");
    o.push_str("    pub fn write(&self, buf: &mut ::bytes::BytesMut, version: i16) -> Result<(), c::EncodeError> {\n        match self {\n");
    for (_, _, v) in &pairs {
        let _ = writeln!(
            o,
            "            RecordValue::{}(v) => super::write_versioned(buf, v, version),",
            v.spec_name
        );
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// Reads the value of a record whose key has `record_type`: its int16 version, then the\n    /// value in that version.\n");
    o.push_str(
        "    pub fn read(record_type: i16, buf: &mut ::bytes::Bytes) -> Result<(i16, RecordValue), c::DecodeError> {\n",
    );
    o.push_str("        Ok(match record_type {\n");
    for (r, _, v) in &pairs {
        let _ = writeln!(
            o,
            "            {} => {{\n                let (version, v) = super::read_versioned(buf)?;\n                (version, RecordValue::{}(v))\n            }}",
            pattern(*r),
            v.spec_name
        );
    }
    let _ = writeln!(
        o,
        "            _ => return Err(c::DecodeError::UnknownRecordType {{ log: {log:?}, record_type: record_type as i64 }}),"
    );
    o.push_str("        })\n    }\n}\n");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake("ThrottleTimeMs"), "throttle_time_ms");
        assert_eq!(snake("ProducerID"), "producer_id");
        assert_eq!(snake("IsInternal"), "is_internal");
        assert_eq!(snake("Type"), "r#type");
        assert_eq!(snake("KRaftVersionRecord"), "k_raft_version_record");
    }

    #[test]
    fn version_conditions() {
        let valid = Range { lo: 0, hi: 11 };
        assert_eq!(Range::parse("0+").unwrap().cond(valid), "true");
        assert_eq!(Range::parse("3+").unwrap().cond(valid), "version >= 3");
        assert_eq!(Range::parse("1-2").unwrap().cond(valid), "version >= 1 && version <= 2");
        assert_eq!(Range::parse("none").unwrap().cond(valid), "false");
        assert_eq!(Range::parse("12+").unwrap().cond(valid), "false");
    }

    /// The files under `dir`, relative to it, with `/` between folders.
    fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("generated dir").flatten() {
            let n = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.path().is_dir() {
                files_under(&e.path(), &format!("{n}/"), out);
            } else {
                out.push(n);
            }
        }
    }

    fn stale_files(out: &Path, files: &[(String, String)]) -> Vec<String> {
        let mut stale = vec![];
        for (name, text) in files {
            let committed = std::fs::read_to_string(out.join(name)).unwrap_or_default();
            if &committed != text {
                stale.push(name.clone());
            }
        }
        let expected: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let mut present = vec![];
        files_under(out, "", &mut present);
        for n in present {
            if !expected.contains(n.as_str()) {
                stale.push(format!("{n} (no spec)"));
            }
        }
        stale
    }

    /// The committed generated code is what the generator writes today: the messages and the
    /// record types.
    #[test]
    fn generated_code_is_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let specs = root.join("../shared/kafka-message-specs");
        let record_specs = root.join("../shared/kafka-record-specs");
        for dir in [&specs, &record_specs] {
            if !dir.exists() {
                eprintln!("SKIPPED: {} is absent; cannot check the generated code", dir.display());
                return;
            }
        }
        let mut stale = stale_files(
            &root.join("crates/wire/src/messages"),
            &generate(&specs).expect("generate"),
        );
        let records = generate_records(&record_specs).expect("generate records");
        let out = root.join("crates/wire/src/kafka_records");
        stale.extend(
            stale_files(&out, &records)
                .into_iter()
                .map(|n| format!("kafka_records/{n}")),
        );
        assert!(
            stale.is_empty(),
            "run `cargo xtask codegen`: stale generated files {stale:?}"
        );
    }
}
