//! The formulas of the ranking-loss family (pytorch-metric-learning 2.9's
//! multi-similarity, NT-Xent, SupCon, circle, lifted structure, generalized
//! lifted structure, N-pairs and margin losses), each in one file.
//!
//! # The shape every formula takes
//!
//! Every loss of the family reads one matrix `s` of the batch — cosine
//! similarities or Euclidean distances of L2-normalized rows, per PML's
//! default distance ([`Score`]) — and which entries are positive and negative
//! pairs, with a weight each (how many times the mined tuples hold the pair;
//! [`PairWeights`]). Every one of them is a sum over **anchor rows**: row
//! `i` of the loss needs only row `i` of `s` and of the two weights (plus,
//! for lifted structure, one number per other row), and gives a value and a
//! count; the loss is `Σ value / Σ count` ([`RowValue`]). So each formula is
//! written twice, side by side in its file:
//!
//! - [`BatchFormula::try_tape`], dfdx tape operations on the `R × C` matrix
//!   and constant weight matrices: the generic path, which any device runs
//!   (CUDA included) and every test compares with;
//! - [`BatchFormula::row`] and [`BatchFormula::row_backward`], plain `f32`
//!   code on one anchor row, forward and its analytic gradient with respect
//!   to that row of `s`: what a CPU kernel calls.
//!
//! The CPU runs the row form on a materialized matrix
//! ([`MetricDevice::try_batch_formula`](crate::device::MetricDevice::try_batch_formula)):
//! one pass each way, no `R × C` temporaries on the tape. For every pair of
//! the batch ([`AllPairs`](crate::miners::AllPairs)) it never materializes
//! the matrix
//! ([`MetricDevice::try_fused_batch_formula`](crate::device::MetricDevice::try_fused_batch_formula)):
//! blocks of rows of `s` come from Gram tiles, the weights of those rows
//! from the labels ([`PairWeights::fill_row`]; no list for
//! [`Tuples::All`](crate::miners::Tuples::All)), `row` and `row_backward`
//! run on them, only per-row sums are kept, and `∂L/∂s` goes through the
//! Gram product with the project's GEMM — no `N × N` (or `N × N × D`)
//! buffer anywhere.

mod circle;
mod exp_sum;
mod lifted_structure;
mod margin;
mod multi_similarity;
mod npairs;
mod ntxent;
#[cfg(test)]
mod row_with_grad_tests;
mod rows;
mod supcon;
pub mod tape;
mod weights;

pub use circle::Circle;
pub use lifted_structure::{GeneralizedLiftedStructure, LiftedStructure};
pub use margin::Margin;
pub use multi_similarity::MultiSimilarity;
pub use npairs::NPairs;
pub use ntxent::NtXent;
pub use rows::{Row, RowValue, RowsForward, batch_grad_on_rows, batch_loss_on_rows};
pub use supcon::SupCon;
pub use tape::TapeWeights;
pub use weights::{PairWeights, Weighting};

use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// The matrix a formula reads (PML's default distance for the loss; both
/// normalize the embeddings, as PML's `CosineSimilarity()` and `LpDistance()`
/// do by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    /// Cosine similarity `⟨x̂_i, x̂_j⟩` (larger is closer: PML's inverted
    /// distance). The miners see `1 − s`.
    Cosine,
    /// Euclidean distance `‖x̂_i − x̂_j‖` of L2-normalized rows (smaller is
    /// closer). The miners see it as it is.
    UnitEuclidean,
}

/// `(number of positive pairs, number of negative pairs)` of PML's lists and
/// the number of triplets they make; what PML's "zero loss" rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListSizes {
    /// Entries of the positive list (with repeats).
    pub pos: usize,
    /// Entries of the negative list (with repeats).
    pub neg: usize,
    /// Triplets: what PML's `convert_to_triplets` makes of the lists.
    pub triplets: usize,
}

impl ListSizes {
    /// PML's `GenericPairLoss` rule: a loss of 0 when every list holds at
    /// most one entry (`all(len(x) <= 1 for x in indices_tuple)`), even when
    /// that one positive and one negative pair would give a nonzero loss.
    pub fn generic_pair_zero(&self) -> bool {
        self.pos <= 1 && self.neg <= 1
    }

    /// PML's rule for the losses it computes per pair (NT-Xent, lifted
    /// structure) and SupCon's: [`generic_pair_zero`](Self::generic_pair_zero),
    /// or no positive pair, or no negative pair.
    pub fn pair_based_zero(&self) -> bool {
        self.generic_pair_zero() || self.pos == 0 || self.neg == 0
    }
}

/// The mining margins of a loss without a margin (NT-Xent, SupCon, N-pairs):
/// the ends of the cosine-distance range, so that every pair counts as
/// active in the statistics and [`HardPairs`](crate::miners::HardPairs)
/// keeps every pair but exact duplicates and antipodes.
pub const EVERY_PAIR: MiningMargins = MiningMargins {
    pos_margin: 0.0,
    margin: 2.0,
};

/// The formula of a loss of the ranking family: its numbers, validated, and
/// its value in both forms (see the [module docs](self)).
pub trait BatchFormula: Copy + std::fmt::Debug + Send + Sync + 'static {
    /// PML's class name (`"MultiSimilarityLoss"`), for messages.
    const NAME: &'static str;
    /// The matrix it reads.
    const SCORE: Score;
    /// How mined tuples become pair weights.
    const WEIGHTING: Weighting;
    /// Whether rows read a number of other rows ([`Self::shared`]).
    const SHARED: bool = false;

    /// Checks the numbers (a temperature > 0, ...): what the macro checks at
    /// compile time, for formulas built at run time.
    fn check(&self) -> Result<(), MetricLossError>;

    /// The margins handed to a pair miner and the statistics, in the units
    /// of the host matrix the miner sees (see [`Score`]).
    fn margins(&self) -> MiningMargins;

    /// PML's rule for a batch whose lists give a loss of exactly 0 before
    /// any formula (no positive pair, ...).
    fn is_zero(&self, sizes: ListSizes) -> bool;

    /// The loss on the tape: the generic path.
    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        s: Tensor<(usize, usize), f32, Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err>;

    /// The number row `row` shares with the others (lifted structure: the
    /// log-sum-exp of its negatives); only called when [`Self::SHARED`].
    fn shared(&self, row: &Row) -> f32 {
        let _ = row;
        0.0
    }

    /// Row `row`'s value and count. `shared[j]` is [`Self::shared`] of row
    /// `j` (empty unless [`Self::SHARED`]).
    fn row(&self, row: &Row, shared: &[f32]) -> RowValue;

    /// Adds `g · ∂value/∂s_j` to `ds[j]` for the row's entries, and `g ·
    /// ∂value/∂shared[k]` to `dshared[k]`.
    fn row_backward(&self, row: &Row, shared: &[f32], g: f32, ds: &mut [f32], dshared: &mut [f32]);

    /// [`row`](Self::row) and, in the same call, `ds` set to `g ·
    /// ∂value/∂s` (zeros when the row's count is 0), for a formula without
    /// shared numbers (`shared = &[]`): what a fused pass that takes the
    /// gradient while a row is in cache calls. The default runs the two
    /// methods ([`row_and_grad_by_parts`]); a formula whose backward would
    /// recompute what its forward found (the log-sum-exps of
    /// multi-similarity, SupCon, circle and generalized lifted structure)
    /// overrides it to compute that once, one exponential per entry.
    fn row_with_grad(&self, row: &Row, g: f32, ds: &mut [f32]) -> RowValue {
        row_and_grad_by_parts(self, row, g, ds)
    }

    /// Adds `dshared · ∂shared/∂s_j` to `ds[j]` (only with [`Self::SHARED`]).
    fn shared_backward(&self, row: &Row, dshared: f32, ds: &mut [f32]) {
        let _ = (row, dshared, ds);
    }
}

/// [`BatchFormula::row_with_grad`] as [`BatchFormula::row`], then
/// [`BatchFormula::row_backward`] on zeros when the row counts: the
/// default, and the fallback of an override.
pub(crate) fn row_and_grad_by_parts<F: BatchFormula>(
    f: &F,
    row: &Row,
    g: f32,
    ds: &mut [f32],
) -> RowValue {
    let v = f.row(row, &[]);
    ds.fill(0.0);
    if v.count > 0.0 {
        f.row_backward(row, &[], g, ds, &mut []);
    }
    v
}

/// A number that must be finite and `> 0`.
pub(crate) fn positive(what: &'static str, v: f32) -> Result<(), MetricLossError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(MetricLossError::InvalidConfig(format!(
            "{what} must be a finite number > 0, got {v}"
        )))
    }
}

/// A number that must be finite.
pub(crate) fn finite(what: &'static str, v: f32) -> Result<(), MetricLossError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(MetricLossError::InvalidConfig(format!(
            "{what} must be a finite number, got {v}"
        )))
    }
}

/// The generic path: gathers the formula's view of the matrix (N-pairs'
/// anchors × positives) and runs [`BatchFormula::try_tape`] with the weights
/// as constant tensors. The body of
/// [`MetricDevice::try_batch_formula`]; any device runs it.
///
/// ```
/// use metric_loss_core::formulas::{generic_batch_formula, MultiSimilarity, PairWeights, Weighting};
/// use metric_loss_core::miners::Tuples;
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let s = dev.tensor_from_vec(vec![1.0f32, 0.5, 0.0, 0.5, 1.0, 0.2, 0.0, 0.2, 1.0], (3, 3));
/// let w = PairWeights::try_new(Weighting::Mask, &Tuples::All, &[0, 0, 1]).unwrap();
/// let f = MultiSimilarity { alpha: 1.0, beta: 1.0, base: 0.0 };
/// let loss = generic_batch_formula(s, &w, &f).unwrap();
/// // rows 0, 1: ln(1 + e^{−0.5}) for the positive; negatives ln(1 + e^0), ln(1 + e^{0.2});
/// // row 2 (no positive): ln(1 + e^0 + e^{0.2}); the mean over the three rows
/// let l = |x: f32| x.ln();
/// let want = (2.0 * l(1.0 + (-0.5f32).exp()) + l(2.0) + l(1.0 + 0.2f32.exp()) + l(2.0 + 0.2f32.exp())) / 3.0;
/// assert!((loss.array() - want).abs() < 1e-6);
/// ```
pub fn generic_batch_formula<F, Dev, T>(
    s: tape::Mat<Dev, T>,
    w: &PairWeights,
    f: &F,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err>
where
    F: BatchFormula,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
{
    let s = match w.view() {
        None => s,
        Some((rows, cols)) => {
            let entries = rows.iter().flat_map(|&r| cols.iter().map(move |&c| (r, c)));
            crate::loss::gather_entries(s, entries)?.try_reshape_like(&(rows.len(), cols.len()))?
        }
    };
    let dev = s.device().clone();
    let weights = TapeWeights::try_new(&dev, w)?;
    f.try_tape(s, &weights)
}

/// The metric space of a declared loss of the family (what
/// `#[metric_loss]` writes into its [`MetricSpace`](crate::loss::MetricSpace)):
/// L2-normalized embeddings, and the cosine or Euclidean distance per
/// [`BatchFormula::SCORE`].
pub mod space {
    use super::{BatchFormula, Score};
    use crate::device::MetricDevice;
    use crate::distance;
    use dfdx::prelude::*;

    type Rows<B, const D: usize, Dev, T> = Tensor<(B, Const<D>), f32, Dev, T>;

    /// L2-normalized rows (every PML distance normalizes by default).
    pub fn try_embed<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        x: Rows<B, D, Dev, T>,
    ) -> Result<Rows<B, D, Dev, T>, Dev::Err> {
        distance::l2_normalize(x)
    }

    /// The formula's distance, row by row (cosine distance `1 − s` for a
    /// similarity).
    pub fn try_distance<
        F: BatchFormula,
        B: Dim,
        const D: usize,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    >(
        a: Rows<B, D, Dev, T>,
        b: Rows<B, D, Dev, T>,
    ) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
        match F::SCORE {
            Score::Cosine => distance::cosine(a, b),
            Score::UnitEuclidean => distance::euclidean(a, b),
        }
    }

    /// The formula's distance between all rows of one batch.
    pub fn try_distance_matrix<
        F: BatchFormula,
        N: Dim,
        const D: usize,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    >(
        x: Rows<N, D, Dev, T>,
    ) -> Result<Tensor<(N, N), f32, Dev, T>, Dev::Err> {
        match F::SCORE {
            Score::Cosine => distance::cosine_matrix(x),
            Score::UnitEuclidean => distance::euclidean_matrix(x),
        }
    }
}
