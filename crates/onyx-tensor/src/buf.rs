//! Element storage: a vector Onyx owns, or a read-only view of bytes that
//! something else owns (a numpy array handed in by Python, a model file's
//! bytes). Views make handing data in free; the first write through
//! [`Buf::make_mut`] turns a view into an owned copy.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::Elem;

/// Bytes that stay where they are, unchanged, for as long as the value lives.
///
/// `bytes` must return the same memory every time it is called: views check
/// their alignment once, when they are made.
pub trait SharedBytes: Send + Sync + 'static {
    fn bytes(&self) -> &[u8];
}

impl SharedBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// The elements of a tensor.
pub struct Buf<T> {
    repr: Repr<T>,
}

enum Repr<T> {
    Owned(Vec<T>),
    /// `len` elements starting `offset` bytes into `source`.
    View {
        source: Arc<dyn SharedBytes>,
        offset: usize,
        len: usize,
    },
}

impl<T: Elem> Buf<T> {
    /// A view of `len` elements at byte `offset` of `source`, in the
    /// machine's byte order; `None` when the range is out of bounds, the
    /// start is not aligned for `T`, or `T` cannot be viewed from bytes
    /// (bool, strings).
    pub fn view(source: Arc<dyn SharedBytes>, offset: usize, len: usize) -> Option<Buf<T>> {
        let end = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(offset))?;
        T::from_bytes(source.bytes().get(offset..end)?)?;
        Some(Buf {
            repr: Repr::View {
                source,
                offset,
                len,
            },
        })
    }

    /// Whether the elements live in someone else's memory.
    pub fn is_view(&self) -> bool {
        matches!(self.repr, Repr::View { .. })
    }

    /// The elements as a vector to change, copying them first if they are a view.
    pub fn make_mut(&mut self) -> &mut Vec<T> {
        if self.is_view() {
            self.repr = Repr::Owned(self.to_vec());
        }
        match &mut self.repr {
            Repr::Owned(v) => v,
            Repr::View { .. } => unreachable!("a view was just copied"),
        }
    }

    /// The elements as a vector: moved out when owned, copied from a view.
    pub fn into_vec(self) -> Vec<T> {
        match self.repr {
            Repr::Owned(v) => v,
            Repr::View { .. } => self.to_vec(),
        }
    }
}

impl<T: Elem> Deref for Buf<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.repr {
            Repr::Owned(v) => v,
            Repr::View {
                source,
                offset,
                len,
            } => {
                let end = offset + len * std::mem::size_of::<T>();
                T::from_bytes(&source.bytes()[*offset..end])
                    .expect("a view's range and alignment are checked when it is made")
            }
        }
    }
}

impl<T> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Buf<T> {
        Buf {
            repr: Repr::Owned(v),
        }
    }
}

impl<T> FromIterator<T> for Buf<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Buf<T> {
        Buf::from(iter.into_iter().collect::<Vec<T>>())
    }
}

/// Cloning a view shares the memory it looks at.
impl<T: Clone> Clone for Buf<T> {
    fn clone(&self) -> Buf<T> {
        Buf {
            repr: match &self.repr {
                Repr::Owned(v) => Repr::Owned(v.clone()),
                Repr::View {
                    source,
                    offset,
                    len,
                } => Repr::View {
                    source: Arc::clone(source),
                    offset: *offset,
                    len: *len,
                },
            },
        }
    }
}

impl<T: Elem + PartialEq> PartialEq for Buf<T> {
    fn eq(&self, other: &Buf<T>) -> bool {
        **self == **other
    }
}

impl<T: Elem + fmt::Debug> fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(values: &[f32]) -> Arc<dyn SharedBytes> {
        Arc::new(
            values
                .iter()
                .flat_map(|x| x.to_ne_bytes())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn a_view_reads_the_bytes_it_was_given() {
        let source = bytes_of(&[1.0, 2.0, 3.0]);
        let b = Buf::<f32>::view(Arc::clone(&source), 4, 2).unwrap();
        assert!(b.is_view());
        assert_eq!(&*b, &[2.0, 3.0]);
        let c = b.clone();
        assert!(c.is_view());
        assert_eq!(c, b);
    }

    #[test]
    fn a_view_refuses_bad_ranges_alignment_and_types() {
        let source = bytes_of(&[1.0, 2.0, 3.0]);
        assert!(Buf::<f32>::view(Arc::clone(&source), 4, 3).is_none());
        assert!(Buf::<f32>::view(Arc::clone(&source), usize::MAX, 1).is_none());
        assert!(Buf::<f32>::view(Arc::clone(&source), 0, usize::MAX).is_none());
        assert!(Buf::<f32>::view(Arc::clone(&source), 2, 1).is_none());
        assert!(Buf::<bool>::view(Arc::clone(&source), 0, 1).is_none());
        assert!(Buf::<u8>::view(source, 1, 3).is_some());
    }

    #[test]
    fn writing_copies_a_view_and_leaves_the_source_alone() {
        let source = bytes_of(&[1.0, 2.0]);
        let mut b = Buf::<f32>::view(Arc::clone(&source), 0, 2).unwrap();
        b.make_mut()[0] = 9.0;
        assert!(!b.is_view());
        assert_eq!(&*b, &[9.0, 2.0]);
        let again = Buf::<f32>::view(source, 0, 2).unwrap();
        assert_eq!(again.into_vec(), vec![1.0, 2.0]);
    }
}
