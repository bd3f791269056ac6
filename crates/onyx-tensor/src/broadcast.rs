use crate::TensorError;

/// The numpy-style broadcast of several shapes.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>, TensorError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for shape in shapes {
        let offset = rank - shape.len();
        for (i, &d) in shape.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(TensorError(format!(
                    "shapes {:?} cannot be broadcast together",
                    shapes
                )));
            }
        }
    }
    if crate::numel(&out).is_none() {
        return Err(TensorError(format!(
            "shapes {shapes:?} broadcast to {out:?}, which has too many elements"
        )));
    }
    Ok(out)
}

/// Strides (in elements) for reading a tensor of `shape` as if it had the
/// broadcast shape `out`: broadcast dimensions get stride 0.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - shape.len();
    let own = crate::strides_of(shape);
    (0..out.len())
        .map(|i| {
            if i < offset || shape[i - offset] == 1 {
                0
            } else {
                own[i - offset]
            }
        })
        .collect()
}

/// Calls `f(out_index, [offset into each input])` for every element of the
/// broadcast shape `out`, in row-major order.
pub fn for_each_broadcast_index<const N: usize>(
    out: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N]),
) {
    // shapes from `broadcast_shapes` never overflow
    let total = crate::numel(out).unwrap_or(0);
    if total == 0 {
        return;
    }
    let rank = out.len();
    let mut counter = vec![0usize; rank];
    let mut offsets = [0usize; N];
    for flat in 0..total {
        f(flat, offsets);
        // advance the odometer, updating each input's offset incrementally
        let mut axis = rank;
        while axis > 0 {
            axis -= 1;
            counter[axis] += 1;
            for (o, s) in offsets.iter_mut().zip(strides.iter()) {
                *o += s[axis];
            }
            if counter[axis] < out[axis] {
                break;
            }
            for (o, s) in offsets.iter_mut().zip(strides.iter()) {
                *o -= s[axis] * out[axis];
            }
            counter[axis] = 0;
        }
    }
}

/// The broadcast of `out` as runs of its innermost elements: calls
/// `f([offset into each input], [each input's step], len)` once per run, in
/// row-major order. Dims of length 1 are dropped and neighbouring dims that
/// every input walks alike are merged first, so a bias add over
/// `[128, 768] + [768]` is 128 runs of 768, and same-shape inputs are one run.
pub fn for_each_broadcast_run<const N: usize>(
    out: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut([usize; N], [usize; N], usize),
) {
    if out.contains(&0) {
        return;
    }
    // merged dims, outermost first: (length, one stride per input)
    let mut dims: Vec<(usize, [usize; N])> = Vec::with_capacity(out.len());
    for (axis, &len) in out.iter().enumerate() {
        if len == 1 {
            continue;
        }
        let st: [usize; N] = std::array::from_fn(|k| strides[k][axis]);
        match dims.last_mut() {
            // the outer dim continues into this one for every input
            Some((outer_len, outer)) if (0..N).all(|k| outer[k] == st[k] * len) => {
                *outer_len *= len;
                *outer = st;
            }
            _ => dims.push((len, st)),
        }
    }
    let Some((run, step)) = dims.pop() else {
        f([0; N], [0; N], 1);
        return;
    };
    let mut counter = vec![0usize; dims.len()];
    let mut offsets = [0usize; N];
    loop {
        f(offsets, step, run);
        // advance the odometer over the outer dims
        let mut axis = dims.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            let (len, st) = &dims[axis];
            counter[axis] += 1;
            for (o, s) in offsets.iter_mut().zip(st) {
                *o += s;
            }
            if counter[axis] < *len {
                break;
            }
            for (o, s) in offsets.iter_mut().zip(st) {
                *o -= s * len;
            }
            counter[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_like_numpy() {
        assert_eq!(
            broadcast_shapes(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert_eq!(broadcast_shapes(&[&[], &[5]]).unwrap(), vec![5]);
        assert!(broadcast_shapes(&[&[2], &[3]]).is_err());
        assert_eq!(broadcast_shapes(&[&[0, 1], &[1, 4]]).unwrap(), vec![0, 4]);
    }

    /// Expands the runs back into per-element offsets.
    fn run_offsets(out: &[usize], a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
        let mut seen = vec![];
        for_each_broadcast_run(out, [a, b], |[oa, ob], [sa, sb], len| {
            for k in 0..len {
                seen.push((oa + k * sa, ob + k * sb));
            }
        });
        seen
    }

    #[test]
    fn runs_match_the_element_walk() {
        let cases: [(&[usize], &[usize]); 6] = [
            (&[2, 1, 3], &[4, 1]),
            (&[1, 4, 3], &[4, 3]),
            (&[5, 6], &[6]),
            (&[3, 1, 2], &[1, 1, 1]),
            (&[2, 3, 4], &[2, 1, 4]),
            (&[], &[]),
        ];
        for (x, y) in cases {
            let out = broadcast_shapes(&[x, y]).unwrap();
            let (a, b) = (broadcast_strides(x, &out), broadcast_strides(y, &out));
            let mut want = vec![];
            for_each_broadcast_index(&out, [&a, &b], |_, [oa, ob]| want.push((oa, ob)));
            assert_eq!(run_offsets(&out, &a, &b), want, "{x:?} with {y:?}");
        }
    }

    #[test]
    fn runs_are_merged() {
        let out = [1, 128, 768];
        let (a, b) = (
            broadcast_strides(&out, &out),
            broadcast_strides(&[768], &out),
        );
        let mut runs = vec![];
        for_each_broadcast_run(&out, [&a, &b], |_, step, len| runs.push((step, len)));
        assert_eq!(runs.len(), 128);
        assert_eq!(runs[0], ([1, 1], 768));
        let mut runs = vec![];
        for_each_broadcast_run(&out, [&a, &a], |o, step, len| runs.push((o, step, len)));
        assert_eq!(runs, [([0, 0], [1, 1], 128 * 768)]);
        let mut n = 0;
        for_each_broadcast_run(&[2, 0, 3], [&[0, 0, 1], &[0, 0, 1]], |_, _, _| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn walks_offsets() {
        let out = [2, 3];
        let a = broadcast_strides(&[2, 1], &out);
        let b = broadcast_strides(&[3], &out);
        let mut seen = vec![];
        for_each_broadcast_index(&out, [&a, &b], |i, [oa, ob]| seen.push((i, oa, ob)));
        assert_eq!(
            seen,
            vec![
                (0, 0, 0),
                (1, 0, 1),
                (2, 0, 2),
                (3, 1, 0),
                (4, 1, 1),
                (5, 1, 2)
            ]
        );
    }
}
