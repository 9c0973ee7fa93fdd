//! [`SharedArray`]: an `ndarray` array in shared memory (the `ndarray`
//! feature), what a numpy user passes to joblib as a memmapped array.

use super::slice::{SharedSlice, SliceArg};
use crate::error::{Error, Result};
use crate::plain::Plain;
use ndarray::{Array, ArrayBase, ArrayView, Data, Dimension, IxDyn};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A read-only `ndarray` array in shared memory: made once (one copy, in
/// row-major order), cloned into jobs for the cost of a reference count,
/// and viewed by worker processes without a copy.
///
/// ```
/// use parjob_runtime::shm::SharedArray;
/// let a = ndarray::Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
/// let shared = SharedArray::new(&a).unwrap();
/// assert_eq!(shared.view(), a.view());
/// assert_eq!(shared.shape(), &[3, 4]);
/// ```
pub struct SharedArray<A, D> {
    data: SharedSlice<A>,
    dim: D,
}

impl<A: Plain, D: Dimension> SharedArray<A, D> {
    /// A shared copy of `array`.
    pub fn new<S: Data<Elem = A>>(array: &ArrayBase<S, D>) -> Result<Self> {
        let standard = array.as_standard_layout();
        let values = standard
            .as_slice()
            .ok_or_else(|| Error::SharedMemory("an array without a standard layout".into()))?;
        Ok(SharedArray {
            data: SharedSlice::new(values)?,
            dim: array.raw_dim(),
        })
    }
}

impl<A, D: Dimension> SharedArray<A, D> {
    /// The array.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        ArrayView::from_shape(self.dim.clone(), &self.data)
            .expect("the shape was checked against the data when it was made")
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }
}

impl<A, D: Clone> Clone for SharedArray<A, D> {
    fn clone(&self) -> Self {
        SharedArray {
            data: self.data.clone(),
            dim: self.dim.clone(),
        }
    }
}

impl<A: std::fmt::Debug, D: Dimension> std::fmt::Debug for SharedArray<A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl<A: Serialize + 'static, D: Dimension> Serialize for SharedArray<A, D> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.data, self.dim.slice()).serialize(s)
    }
}

impl<'de, A: Deserialize<'de> + 'static, D: Dimension> Deserialize<'de> for SharedArray<A, D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> std::result::Result<Self, De::Error> {
        let (data, shape) = <(SharedSlice<A>, Vec<usize>)>::deserialize(d)?;
        let dim = checked_dim::<D>(&shape, data.len()).map_err(De::Error::custom)?;
        Ok(SharedArray { data, dim })
    }
}

/// What a job stores for an `ndarray` parameter of a task (with the
/// `ndarray` feature): the numbers in row-major order, as a
/// [`SliceArg`] (a copy, or a view of shared memory over `max_nbytes`),
/// and the shape. An `ArrayView` parameter borrows from it, so a worker
/// views a shared array without a copy; an `Array` parameter is made from
/// it, one copy in the worker. The macros use it.
#[doc(hidden)]
pub struct ArrayArg<A, D> {
    data: SliceArg<A>,
    dim: D,
}

impl<A: 'static, D: Dimension> ArrayArg<A, D> {
    /// The array, borrowed.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        ArrayView::from_shape(self.dim.clone(), &self.data)
            .expect("the shape was checked against the data when it was made")
    }
}

impl<A: Clone + 'static, D: Dimension> ArrayArg<A, D> {
    /// The array, owned: the moved one, or one copy of shared memory.
    pub fn into_owned(self) -> Array<A, D> {
        Array::from_shape_vec(self.dim, self.data.into_vec())
            .expect("the shape was checked against the data when it was made")
    }

    /// A moved array: its own buffer when it is in row-major order.
    pub fn from_owned(array: Array<A, D>) -> Self {
        let dim = array.raw_dim();
        if array.is_standard_layout() {
            let (values, offset) = array.into_raw_vec_and_offset();
            if offset.unwrap_or(0) == 0 && values.len() == dim.size() {
                return ArrayArg {
                    data: SliceArg::Owned(values),
                    dim,
                };
            }
            let view = ArrayView::from_shape(dim.clone(), &values[offset.unwrap_or(0)..])
                .expect("a standard layout array's buffer holds its elements in order");
            return ArrayArg::borrowed(&view);
        }
        ArrayArg::borrowed(&array.view())
    }

    /// A borrowed array: the current run's segment when it is a big array
    /// of numbers in row-major order (one segment however many jobs borrow
    /// it), else a copy.
    pub fn borrowed<S: Data<Elem = A>>(array: &ArrayBase<S, D>) -> Self {
        let data = match array.as_slice() {
            Some(values) => SliceArg::borrowed(values),
            None => SliceArg::Owned(array.iter().cloned().collect()),
        };
        ArrayArg {
            data,
            dim: array.raw_dim(),
        }
    }
}

/// A value a job can own for a task's `ndarray` parameter of element `A`
/// and dimension `D`.
#[diagnostic::on_unimplemented(
    message = "an ndarray parameter of `{A}` cannot take `{Self}`",
    label = "pass an `Array`, a `&Array`, an `ArrayView` or a `SharedArray` of `{A}` with the parameter's dimension"
)]
pub trait IntoArrayArg<A, D> {
    /// What the job stores.
    fn into_array_arg(self) -> ArrayArg<A, D>;
}

impl<A: Clone + 'static, D: Dimension> IntoArrayArg<A, D> for Array<A, D> {
    fn into_array_arg(self) -> ArrayArg<A, D> {
        ArrayArg::from_owned(self)
    }
}

impl<A: Clone + 'static, D: Dimension> IntoArrayArg<A, D> for &Array<A, D> {
    fn into_array_arg(self) -> ArrayArg<A, D> {
        ArrayArg::borrowed(self)
    }
}

impl<A: Clone + 'static, D: Dimension> IntoArrayArg<A, D> for ArrayView<'_, A, D> {
    fn into_array_arg(self) -> ArrayArg<A, D> {
        ArrayArg::borrowed(&self)
    }
}

impl<A: Clone + 'static, D: Dimension> IntoArrayArg<A, D> for &ArrayView<'_, A, D> {
    fn into_array_arg(self) -> ArrayArg<A, D> {
        ArrayArg::borrowed(self)
    }
}

impl<A, D> IntoArrayArg<A, D> for SharedArray<A, D> {
    fn into_array_arg(self) -> ArrayArg<A, D> {
        ArrayArg {
            data: SliceArg::Shared(self.data),
            dim: self.dim,
        }
    }
}

impl<A, D: Clone> IntoArrayArg<A, D> for &SharedArray<A, D> {
    fn into_array_arg(self) -> ArrayArg<A, D> {
        self.clone().into_array_arg()
    }
}

impl<A: Serialize + 'static, D: Dimension> Serialize for ArrayArg<A, D> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.data, self.dim.slice()).serialize(s)
    }
}

impl<'de, A: Deserialize<'de> + 'static, D: Dimension> Deserialize<'de> for ArrayArg<A, D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> std::result::Result<Self, De::Error> {
        let (data, shape) = <(SliceArg<A>, Vec<usize>)>::deserialize(d)?;
        let dim = checked_dim::<D>(&shape, data.len()).map_err(De::Error::custom)?;
        Ok(ArrayArg { data, dim })
    }
}

/// The dimension of `shape`, which must hold exactly `len` elements.
fn checked_dim<D: Dimension>(shape: &[usize], len: usize) -> std::result::Result<D, String> {
    let dim = D::from_dimension(&IxDyn(shape))
        .ok_or_else(|| format!("a shape of {} axes", shape.len()))?;
    let count = shape.iter().try_fold(1usize, |n, &k| n.checked_mul(k));
    if count != Some(len) {
        return Err(format!("a shape of {shape:?} for {len} numbers"));
    }
    Ok(dim)
}
