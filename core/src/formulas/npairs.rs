//! N-pairs loss (Sohn, NeurIPS 2016), as PML 2.9's `NPairsLoss`.

use super::rows::Lse;
use super::tape::{Mat, TapeWeights, lse};
use super::{BatchFormula, ListSizes, Row, RowValue, Score, Weighting};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// N-pairs: one positive pair `(a_k, p_k)` per class of the batch (PML's
/// selection: the first positive pair of the list for each anchor label, in
/// increasing label order), and with `s_kl` the cosine similarity of anchor
/// `k` and positive `l`, the cross entropy of each anchor against every
/// selected positive,
///
/// `L_k = ln Σ_l e^{s_kl} − s_kk`,
///
/// averaged over the selected pairs (PML's `MeanReducer`).
///
/// PML's behaviour kept here, where it may surprise:
/// - PML's default `DotProductSimilarity()` normalizes the embeddings
///   (every PML distance does by default), so this is the cosine
///   similarity, not the paper's inner product, and there is no L2
///   penalty on the embeddings (PML leaves it to an embedding regularizer);
/// - of all the pairs a miner gives, only one per class is used, and the
///   other classes' *positives* are the negatives: the negative pairs of the
///   list are ignored;
/// - a batch of a single class gives one pair, whose loss is exactly 0; a
///   batch without positive pairs gives 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NPairs;

impl BatchFormula for NPairs {
    const NAME: &'static str = "NPairsLoss";
    const SCORE: Score = Score::Cosine;
    const WEIGHTING: Weighting = Weighting::NPairs;

    fn check(&self) -> Result<(), MetricLossError> {
        Ok(())
    }

    /// No margin: [`EVERY_PAIR`](super::EVERY_PAIR).
    fn margins(&self) -> MiningMargins {
        super::EVERY_PAIR
    }

    fn is_zero(&self, sizes: ListSizes) -> bool {
        sizes.pos == 0
    }

    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        s: Mat<Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (s, tape) = s.split_tape();
        let all = lse(s.clone().put_tape(tape), &w.any_log)?;
        let own = s
            .retaped::<T>()
            .try_mul(w.pos.clone())?
            .try_sum::<(usize,), Axis<1>>()?;
        all.try_sub(own)?.try_sum()?.try_div(w.shape.0 as f32)
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let all = Self::all(row);
        RowValue {
            value: (all.value - f64::from(row.s[row.index])) as f32,
            count: 1.0,
        }
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let all = Self::all(row);
        for (j, d) in ds.iter_mut().enumerate() {
            let own = f64::from(u8::from(j == row.index));
            *d += (f64::from(g) * (all.grad(row.s[j], 1.0) - own)) as f32;
        }
    }
}

impl NPairs {
    /// `ln Σ_l e^{s_kl}` over every column.
    fn all(row: &Row) -> Lse {
        Lse::of(row.s.iter().map(|&s| (s, 1.0)), false).expect("a row of N-pairs has its own pair")
    }
}
