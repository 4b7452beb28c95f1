//! A small deterministic generator (SplitMix64) for test data, so the tests need no extra
//! crate. Included by path from the tests of both packages, each of which uses a part of it.

#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};

/// SplitMix64: the same seed gives the same numbers on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// An array of `f`'s values, in row-major order.
    pub fn array(&mut self, shape: &[usize], mut f: impl FnMut(&mut Rng) -> f64) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || f(self) as f32)
    }

    /// An array of normal values times `scale`.
    pub fn normal_array(&mut self, shape: &[usize], scale: f64) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || (scale * self.normal()) as f32)
    }

    /// An array of uniform values in `[low, high)`.
    pub fn uniform_array(&mut self, shape: &[usize], low: f64, high: f64) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || (low + (high - low) * self.uniform()) as f32)
    }
}
