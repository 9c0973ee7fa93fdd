//! [`SharedArray`]: an `ndarray` array in shared memory (the `ndarray`
//! feature), what a numpy user passes to joblib as a memmapped array.

use super::slice::SharedSlice;
use crate::error::{Error, Result};
use crate::plain::Plain;
use ndarray::{ArrayBase, ArrayView, Data, Dimension, IxDyn};
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

impl<A: Serialize, D: Dimension> Serialize for SharedArray<A, D> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.data, self.dim.slice()).serialize(s)
    }
}

impl<'de, A: Deserialize<'de>, D: Dimension> Deserialize<'de> for SharedArray<A, D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> std::result::Result<Self, De::Error> {
        let (data, shape) = <(SharedSlice<A>, Vec<usize>)>::deserialize(d)?;
        let dim = D::from_dimension(&IxDyn(&shape))
            .ok_or_else(|| De::Error::custom(format!("a shape of {} axes", shape.len())))?;
        let count = shape.iter().try_fold(1usize, |n, &k| n.checked_mul(k));
        if count != Some(data.len()) {
            return Err(De::Error::custom(format!(
                "a shape of {shape:?} for {} numbers",
                data.len()
            )));
        }
        Ok(SharedArray { data, dim })
    }
}
