//! String operators: StringNormalizer, StringConcat and StringSplit.
//!
//! Case changes use Unicode's locale-independent case mappings; the `locale`
//! attribute of StringNormalizer is accepted and ignored. RegexFullMatch is
//! not implemented (it would need a regular-expression engine).

use onyx_tensor::{Tensor, Value};

use super::{broadcast_binary, one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

fn strings<'a>(t: &'a Tensor, what: &str) -> OpResult<&'a [String]> {
    t.as_slice::<String>()
        .map_err(|_| op_err!("{what} should be a string tensor but is {}", t.dtype()))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CaseChange {
    None,
    Lower,
    Upper,
}

struct Normalizer {
    stopwords: Vec<String>,
    case_sensitive: bool,
    change: CaseChange,
}

impl Normalizer {
    fn is_stopword(&self, s: &str) -> bool {
        if self.case_sensitive {
            self.stopwords.iter().any(|w| w == s)
        } else {
            let low = s.to_lowercase();
            self.stopwords.contains(&low)
        }
    }

    fn change_case(&self, s: &str) -> String {
        match self.change {
            CaseChange::None => s.to_string(),
            CaseChange::Lower => s.to_lowercase(),
            CaseChange::Upper => s.to_uppercase(),
        }
    }

    fn run(&self, x: &Tensor) -> OpResult<Tensor> {
        let v = strings(x, "input")?;
        let two_d = match x.shape() {
            [_] => false,
            [1, _] => true,
            s => {
                return Err(op_err!(
                    "StringNormalizer takes a [C] or [1, C] tensor but got shape {s:?}"
                ))
            }
        };
        let mut out: Vec<String> = v
            .iter()
            .filter(|s| !self.is_stopword(s))
            .map(|s| self.change_case(s))
            .collect();
        if out.is_empty() {
            out.push(String::new());
        }
        let shape = if two_d {
            vec![1, out.len()]
        } else {
            vec![out.len()]
        };
        Ok(Tensor::from_vec(shape, out)?)
    }
}

fn build_normalizer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let case_sensitive = ctx.node.attr_int("is_case_sensitive")?.unwrap_or(0) != 0;
    let change = match ctx.node.attr_string("case_change_action")?.as_deref() {
        None | Some("NONE") => CaseChange::None,
        Some("LOWER") => CaseChange::Lower,
        Some("UPPER") => CaseChange::Upper,
        Some(other) => {
            return Err(op_err!(
                "attribute 'case_change_action' should be NONE, LOWER or UPPER but is \"{other}\""
            ))
        }
    };
    let mut stopwords = ctx.node.attr_strings("stopwords")?.unwrap_or_default();
    if !case_sensitive {
        for w in &mut stopwords {
            *w = w.to_lowercase();
        }
    }
    let n = Normalizer {
        stopwords,
        case_sensitive,
        change,
    };
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        one(n.run(tensor_in(inputs, 0)?)?)
    }))
}

fn concat(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let x = strings(a, "input 0")?;
    let y = strings(b, "input 1")?;
    let (v, shape) = broadcast_binary(x, a.shape(), y, b.shape(), |p, q| p + q.as_str())?;
    Ok(Tensor::from_vec(shape, v)?)
}

/// Splits like Python's `str.split`: on `delim`, or on runs of whitespace
/// (ignoring leading and trailing whitespace) when `delim` is None;
/// at most `maxsplit` splits when given.
fn split_one<'a>(s: &'a str, delim: Option<&str>, maxsplit: Option<usize>) -> Vec<&'a str> {
    match delim {
        Some(d) => match maxsplit {
            Some(m) => s.splitn(m.saturating_add(1), d).collect(),
            None => s.split(d).collect(),
        },
        None => {
            let mut parts = Vec::new();
            let mut rest = s.trim_start();
            while !rest.is_empty() {
                if maxsplit == Some(parts.len()) {
                    parts.push(rest);
                    break;
                }
                match rest.find(char::is_whitespace) {
                    None => {
                        parts.push(rest);
                        break;
                    }
                    Some(i) => {
                        parts.push(&rest[..i]);
                        rest = rest[i..].trim_start();
                    }
                }
            }
            parts
        }
    }
}

fn split(
    check: impl Fn(usize, usize) -> OpResult<()>,
    x: &Tensor,
    delim: Option<&str>,
    maxsplit: Option<usize>,
) -> OpResult<(Tensor, Tensor)> {
    let v = strings(x, "input")?;
    let parts: Vec<Vec<&str>> = v.iter().map(|s| split_one(s, delim, maxsplit)).collect();
    let width = parts.iter().map(Vec::len).max().unwrap_or(0);
    let total = v
        .len()
        .checked_mul(width)
        .ok_or_else(|| op_err!("StringSplit output is too large"))?;
    check(total, std::mem::size_of::<String>())?;
    let mut out = Vec::with_capacity(total);
    let mut counts = Vec::with_capacity(v.len());
    for p in &parts {
        counts.push(p.len() as i64);
        out.extend(p.iter().map(|s| s.to_string()));
        out.extend(std::iter::repeat_n(String::new(), width - p.len()));
    }
    let mut shape = x.shape().to_vec();
    shape.push(width);
    Ok((
        Tensor::from_vec(shape, out)?,
        Tensor::from_vec(x.shape().to_vec(), counts)?,
    ))
}

fn build_split(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let delim = ctx.node.attr_string("delimiter")?.filter(|d| !d.is_empty());
    // a negative maxsplit means no limit, as in Python
    let maxsplit = ctx
        .node
        .attr_int("maxsplit")?
        .and_then(|m| usize::try_from(m).ok());
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let (y, z) = split(
            |n, b| ctx.check_alloc(n, b),
            tensor_in(inputs, 0)?,
            delim.as_deref(),
            maxsplit,
        )?;
        Ok(vec![Value::Tensor(y), Value::Tensor(z)])
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "StringNormalizer", build_normalizer);
    r.add("", "StringConcat", |_| {
        Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
            let a = tensor_in(inputs, 0)?;
            let b = tensor_in(inputs, 1)?;
            super::logic::check_broadcast(ctx, a, b, std::mem::size_of::<String>())?;
            one(concat(a, b)?)
        }))
    });
    r.add("", "StringSplit", build_split);
    r.add("", "RegexFullMatch", build_regex_full_match);
}

/// RegexFullMatch (opset 20): whether each string matches `pattern` in
/// full. ONNX specifies RE2 syntax; the `regex` crate implements the same
/// family (no backreferences or lookaround), so the pattern is compiled
/// once, anchored at both ends.
fn build_regex_full_match(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let pattern = ctx
        .node
        .attr_string("pattern")?
        .ok_or_else(|| op_err!("attribute 'pattern' is required"))?;
    let re = regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| op_err!("attribute 'pattern' is not a valid regular expression: {e}"))?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let strings = x.as_slice::<String>()?;
        let matches: Vec<bool> = strings.iter().map(|s| re.is_match(s)).collect();
        one(Tensor::from_vec(x.shape().to_vec(), matches)?)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_full_match_is_anchored() {
        let node = crate::ir::Node {
            name: String::new(),
            op_type: "RegexFullMatch".into(),
            domain: String::new(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            attrs: [(
                "pattern".to_string(),
                crate::ir::Attr::String(r"a\d+|b".into()),
            )]
            .into(),
        };
        let opsets = Default::default();
        let planner = crate::plan::Planner {
            opsets: &opsets,
            registry: Registry::global(),
        };
        let kernel = build_regex_full_match(&BuildCtx {
            node: &node,
            opset: 20,
            planner: &planner,
            const_inputs: &[],
            stood_in: Default::default(),
        })
        .unwrap();
        let x = Value::Tensor(st(&[4], &["a12", "xa12", "b", "a"]));
        let limits = crate::Limits::default();
        let y = kernel.run(&RunCtx::detached(&limits), &[Some(&x)]).unwrap();
        assert_eq!(
            y[0].as_tensor().unwrap().as_slice::<bool>().unwrap(),
            &[true, false, true, false]
        );
    }

    fn st(shape: &[usize], v: &[&str]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn normalizer() {
        let n = Normalizer {
            stopwords: vec!["monday".into()],
            case_sensitive: false,
            change: CaseChange::Upper,
        };
        let y = n.run(&st(&[1, 3], &["Monday", "tuesday", "Wed"])).unwrap();
        assert_eq!(y.shape(), &[1, 2]);
        assert_eq!(y.as_slice::<String>().unwrap(), &["TUESDAY", "WED"]);
        let y = n.run(&st(&[1], &["MONDAY"])).unwrap();
        assert_eq!(y.shape(), &[1]);
        assert_eq!(y.as_slice::<String>().unwrap(), &[""]);
        assert!(n.run(&st(&[2, 1], &["a", "b"])).is_err());
    }

    #[test]
    fn concat_and_split() {
        let c = concat(&st(&[2], &["a", "b"]), &st(&[], &["!"])).unwrap();
        assert_eq!(c.as_slice::<String>().unwrap(), &["a!", "b!"]);
        assert_eq!(split_one("  a  b c ", None, None), vec!["a", "b", "c"]);
        assert_eq!(split_one("  a  b c ", None, Some(1)), vec!["a", "b c "]);
        assert_eq!(split_one("a,,b", Some(","), None), vec!["a", "", "b"]);
        assert_eq!(split_one("a,b,c", Some(","), Some(1)), vec!["a", "b,c"]);
        let ok = |_: usize, _: usize| Ok(());
        let (y, z) = split(ok, &st(&[2], &["a b", "c"]), None, None).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<String>().unwrap(), &["a", "b", "c", ""]);
        assert_eq!(z.as_slice::<i64>().unwrap(), &[2, 1]);
        let (y, _) = split(ok, &st(&[0], &[]), None, None).unwrap();
        assert_eq!(y.shape(), &[0, 0]);
    }
}
