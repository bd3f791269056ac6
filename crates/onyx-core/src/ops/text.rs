//! TfIdfVectorizer: counts (skip-)n-grams from a pool and weighs them.
//!
//! The pool is stored as a hash map from n-gram to pool position, holding
//! only n-grams whose length is within [min_gram_length, max_gram_length].
//! Unigrams are counted once; longer n-grams are counted for every skip
//! distance from 1 (adjacent) to max_skip_count + 1, as the reference does.

use std::collections::HashMap;
use std::hash::Hash;

use onyx_tensor::{Data, Tensor, Value};

use super::{one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Tf,
    Idf,
    TfIdf,
}

/// The pool as n-gram -> output column, for integer or string tokens.
enum Pool {
    Ints(HashMap<Vec<i64>, usize>),
    Strs(HashMap<Vec<String>, usize>),
}

struct TfIdf {
    mode: Mode,
    min_n: usize,
    max_n: usize,
    max_skip: usize,
    out_size: usize,
    weights: Vec<f32>,
    pool: Pool,
}

/// Splits `pool` into n-grams by `counts` (start offset of each n-gram
/// length, from 1) and maps those of wanted length to their output column.
fn build_pool<K: Clone + Eq + Hash>(
    pool: &[K],
    counts: &[i64],
    indexes: &[usize],
    min_n: usize,
    max_n: usize,
) -> OpResult<HashMap<Vec<K>, usize>> {
    let mut map = HashMap::new();
    let mut gram_id = 0usize;
    for (i, &start) in counts.iter().enumerate() {
        let n = i + 1;
        let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
        if start < 0 || end < start || end as usize > pool.len() {
            return Err(op_err!(
                "ngram_counts {counts:?} do not fit a pool of {} items",
                pool.len()
            ));
        }
        let (start, end) = (start as usize, end as usize);
        let grams = (end - start) / n;
        if n < min_n || n > max_n {
            gram_id += grams;
            continue;
        }
        for g in 0..grams {
            let col = *indexes.get(gram_id).ok_or_else(|| {
                op_err!(
                    "ngram_indexes has {} entries but the pool has more n-grams",
                    indexes.len()
                )
            })?;
            let s = start + g * n;
            map.insert(pool[s..s + n].to_vec(), col);
            gram_id += 1;
        }
    }
    Ok(map)
}

/// Adds the n-gram counts of one row of tokens to `freq` (one row of output).
fn count_row<K: Clone + Eq + Hash>(
    row: &[K],
    map: &HashMap<Vec<K>, usize>,
    a: &TfIdf,
    freq: &mut [u64],
) {
    let mut key: Vec<K> = Vec::with_capacity(a.max_n.min(row.len()));
    let mut min_n = a.min_n;
    // a skip distance as long as the row leaves no n-gram of two or more
    let max_dist = a.max_skip.saturating_add(1).min(row.len().max(1));
    for skip in 1..=max_dist {
        for start in 0..row.len() {
            // the shortest counted n-gram must fit
            if start.saturating_add(skip.saturating_mul(min_n - 1)) >= row.len() {
                break;
            }
            key.clear();
            let mut pos = start;
            while key.len() < a.max_n && pos < row.len() {
                key.push(row[pos].clone());
                if key.len() >= min_n {
                    if let Some(&col) = map.get(key.as_slice()) {
                        freq[col] += 1;
                    }
                }
                pos += skip;
            }
        }
        // unigrams have no skips: count them only once
        if min_n == 1 {
            min_n = 2;
            if min_n > a.max_n {
                break;
            }
        }
    }
}

impl TfIdf {
    fn run(&self, ctx: &RunCtx, x: &Tensor) -> OpResult<Tensor> {
        let (rows, cols, out_shape) = match x.shape() {
            [] => (1, 1, vec![self.out_size]),
            [c] => (1, *c, vec![self.out_size]),
            [b, c] => (*b, *c, vec![*b, self.out_size]),
            s => return Err(op_err!("input should be 1-D or 2-D but has shape {s:?}")),
        };
        let total = rows
            .checked_mul(self.out_size)
            .ok_or_else(|| op_err!("output of {rows} x {} is too large", self.out_size))?;
        ctx.check_alloc(total, 8)?;
        let mut freq = vec![0u64; total];
        if cols > 0 && self.min_n <= self.max_n {
            match (&self.pool, x.data()) {
                (Pool::Strs(map), Data::Str(v)) => {
                    for (r, f) in freq.chunks_mut(self.out_size.max(1)).enumerate() {
                        count_row(&v[r * cols..(r + 1) * cols], map, self, f);
                    }
                }
                (Pool::Ints(map), _) if !matches!(x.data(), Data::Str(_)) => {
                    let v = x.to_i64_vec()?;
                    for (r, f) in freq.chunks_mut(self.out_size.max(1)).enumerate() {
                        count_row(&v[r * cols..(r + 1) * cols], map, self, f);
                    }
                }
                _ => {
                    return Err(op_err!(
                        "input of type {} does not match the pool's type",
                        x.dtype()
                    ))
                }
            }
        }
        let w = &self.weights;
        let y: Vec<f32> = freq
            .iter()
            .enumerate()
            .map(|(p, &f)| {
                let col = p % self.out_size.max(1);
                match self.mode {
                    Mode::Tf => f as f32,
                    Mode::Idf if w.is_empty() => f32::from(u8::from(f > 0)),
                    Mode::Idf => {
                        if f > 0 {
                            w[col]
                        } else {
                            0.0
                        }
                    }
                    Mode::TfIdf if w.is_empty() => f as f32,
                    Mode::TfIdf => w[col] * f as f32,
                }
            })
            .collect();
        Ok(Tensor::from_vec(out_shape, y)?)
    }
}

fn req_int(ctx: &BuildCtx, name: &str) -> OpResult<i64> {
    ctx.node
        .attr_int(name)?
        .ok_or_else(|| op_err!("missing required attribute '{name}'"))
}

fn parse(ctx: &BuildCtx) -> OpResult<TfIdf> {
    let mode = match ctx.node.attr_string("mode")?.as_deref() {
        Some("TF") => Mode::Tf,
        Some("IDF") => Mode::Idf,
        Some("TFIDF") => Mode::TfIdf,
        Some(m) => return Err(op_err!("unknown mode '{m}'")),
        None => return Err(op_err!("missing required attribute 'mode'")),
    };
    let min_n = req_int(ctx, "min_gram_length")?;
    let max_n = req_int(ctx, "max_gram_length")?;
    let max_skip = req_int(ctx, "max_skip_count")?;
    if min_n < 1 || max_n < min_n || max_skip < 0 {
        return Err(op_err!(
            "invalid gram lengths [{min_n}, {max_n}] or skip count {max_skip}"
        ));
    }
    let counts = ctx
        .node
        .attr_ints("ngram_counts")?
        .ok_or_else(|| op_err!("missing required attribute 'ngram_counts'"))?;
    let indexes = ctx
        .node
        .attr_ints("ngram_indexes")?
        .ok_or_else(|| op_err!("missing required attribute 'ngram_indexes'"))?;
    let indexes = indexes
        .iter()
        .map(|&i| usize::try_from(i).map_err(|_| op_err!("ngram_indexes holds negative {i}")))
        .collect::<OpResult<Vec<usize>>>()?;
    let out_size = indexes.iter().max().map_or(0, |m| m + 1);
    let weights = ctx.node.attr_floats("weights")?.unwrap_or_default();
    if !weights.is_empty() && weights.len() < out_size {
        return Err(op_err!(
            "weights has {} entries but the output has {out_size} columns",
            weights.len()
        ));
    }
    let (min_n, max_n) = (min_n as usize, max_n as usize);
    let ints = ctx.node.attr_ints("pool_int64s")?;
    let strs = ctx.node.attr_strings("pool_strings")?;
    let pool = match (ints, strs) {
        (Some(p), None) => Pool::Ints(build_pool(&p, &counts, &indexes, min_n, max_n)?),
        (None, Some(p)) => Pool::Strs(build_pool(&p, &counts, &indexes, min_n, max_n)?),
        (Some(_), Some(_)) => {
            return Err(op_err!(
                "only one of pool_int64s and pool_strings may be set"
            ))
        }
        (None, None) => return Err(op_err!("one of pool_int64s or pool_strings is required")),
    };
    Ok(TfIdf {
        mode,
        min_n,
        max_n,
        max_skip: max_skip as usize,
        out_size,
        weights,
        pool,
    })
}

fn build_tfidf(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let a = parse(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        one(a.run(ctx, tensor_in(inputs, 0)?)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "TfIdfVectorizer", build_tfidf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn vectorizer(mode: Mode, min_n: usize, max_n: usize, skip: usize, w: Vec<f32>) -> TfIdf {
        // pool: unigrams [2, 3, 5, 4], bigrams [5 6], [7 8], [6 7]
        let pool = [2i64, 3, 5, 4, 5, 6, 7, 8, 6, 7];
        let idx: Vec<usize> = (0..7).collect();
        TfIdf {
            mode,
            min_n,
            max_n,
            max_skip: skip,
            out_size: 7,
            weights: w,
            pool: Pool::Ints(build_pool(&pool, &[0, 4], &idx, min_n, max_n).unwrap()),
        }
    }

    fn run(a: &TfIdf, x: Vec<i32>, shape: Vec<usize>) -> Vec<f32> {
        let limits = Limits::default();
        let x = Tensor::from_vec(shape, x).unwrap();
        let y = a.run(&RunCtx::detached(&limits), &x).unwrap();
        y.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn bigrams_without_skips() {
        let a = vectorizer(Mode::Tf, 2, 2, 0, vec![]);
        let x = vec![1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8];
        assert_eq!(run(&a, x, vec![12]), vec![0., 0., 0., 0., 1., 1., 1.]);
    }

    #[test]
    fn unigrams_and_skipped_bigrams() {
        let a = vectorizer(Mode::Tf, 1, 2, 5, vec![]);
        let x = vec![1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8];
        assert_eq!(run(&a, x, vec![12]), vec![0., 3., 1., 0., 1., 3., 1.]);
    }

    #[test]
    fn huge_skip_count_is_bounded_by_the_row() {
        let a = vectorizer(Mode::Tf, 2, 2, usize::MAX, vec![]);
        assert_eq!(
            run(&a, vec![5, 6, 7, 8], vec![4]),
            vec![0., 0., 0., 0., 1., 1., 1.]
        );
    }

    #[test]
    fn idf_weights_and_batches() {
        let w = vec![1., 2., 3., 4., 5., 6., 7.];
        let a = vectorizer(Mode::Idf, 1, 1, 0, w);
        let y = run(&a, vec![2, 2, 9, 5, 4, 4], vec![2, 3]);
        assert_eq!(
            y,
            vec![1., 0., 0., 0., 0., 0., 0., 0., 0., 3., 4., 0., 0., 0.]
        );
        assert!(a
            .run(
                &RunCtx::detached(&Limits::default()),
                &Tensor::from_vec(vec![1, 1, 1], vec![1i64]).unwrap()
            )
            .is_err());
    }
}
