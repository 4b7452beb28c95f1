//! The search space as the strategies see it: the dimensions, each candidate's coordinates,
//! and which candidate an assignment of values makes.

use std::collections::HashMap;

use crate::plan::{project, Dimension, Plan};

/// The dimensions and candidates of a plan, without its steps.
#[derive(Debug, Clone)]
pub struct Space {
    dims: Vec<Dimension>,
    coords: Vec<Vec<Option<usize>>>,
    /// Each enumerated path: the candidate it makes, or `None` when a pass refused it.
    paths: HashMap<Vec<Option<usize>>, Option<usize>>,
}

impl Space {
    pub fn from_plan(plan: &Plan) -> Self {
        Space {
            dims: plan.dimensions().to_vec(),
            coords: plan.candidates().iter().map(|c| c.coords.clone()).collect(),
            paths: plan.paths().map(|(coords, candidate)| (coords.to_vec(), candidate)).collect(),
        }
    }

    /// A space from its parts: the dimensions, each candidate's coordinates, and each
    /// path's candidate (`None` for a refused one).
    pub fn from_parts(
        dims: Vec<Dimension>,
        coords: Vec<Vec<Option<usize>>>,
        paths: HashMap<Vec<Option<usize>>, Option<usize>>,
    ) -> Self {
        Space { dims, coords, paths }
    }

    /// A cartesian product of dimensions of the given sizes, candidates numbered with the
    /// first dimension varying slowest, as the plan numbers them.
    pub fn cartesian(sizes: &[usize]) -> Self {
        let dims: Vec<Dimension> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Dimension { label: format!("d{i}"), size, parent: None })
            .collect();
        let total: usize = sizes.iter().product();
        let mut coords = Vec::with_capacity(total);
        for mut index in 0..total {
            let mut point = vec![None; sizes.len()];
            for (slot, &size) in point.iter_mut().zip(sizes).rev() {
                *slot = Some(index % size);
                index /= size;
            }
            coords.push(point);
        }
        let paths = coords.iter().enumerate().map(|(i, c)| (c.clone(), Some(i))).collect();
        Space { dims, coords, paths }
    }

    /// How many candidates there are.
    pub fn len(&self) -> usize {
        self.coords.len()
    }

    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    /// The value each dimension of `candidate` takes (`None` in branches it does not take).
    pub fn coords(&self, candidate: usize) -> &[Option<usize>] {
        &self.coords[candidate]
    }

    /// The candidate a full assignment (one value per dimension) makes; `None` when a pass
    /// refuses that combination or it was not enumerated.
    pub fn lookup(&self, assignment: &[usize]) -> Option<usize> {
        self.paths.get(&project(&self.dims, assignment)).copied().flatten()
    }
}
