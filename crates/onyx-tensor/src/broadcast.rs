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
