//! Verification metrics for pairs (face, speaker, signature verification).
//!
//! Every function takes one **score per pair, higher meaning "more likely the
//! same identity"** (a similarity), and `is_same[i]` saying whether pair `i`
//! is genuine. Callers with distances pass `-distance`. A pair is accepted
//! at threshold `t` when `score >= t`.
//!
//! - FAR (false accept rate) = accepted impostor pairs / impostor pairs;
//! - TAR (true accept rate) = accepted genuine pairs / genuine pairs;
//! - FRR = 1 - TAR.
//!
//! Scores must be finite; all functions (except [`kfold_accuracy`]'s fold
//! count) need at least one genuine and one impostor pair.
//!
//! ```
//! use metric_loss_core::eval::{eer, roc_auc, tar_at_far};
//!
//! let scores = [0.9, 0.8, 0.3, 0.1];
//! let same = [true, true, false, false];
//! assert_eq!(roc_auc(&scores, &same).unwrap(), 1.0);
//! assert_eq!(eer(&scores, &same).unwrap(), 0.0);
//! assert_eq!(tar_at_far(&scores, &same, 0.0).unwrap(), 1.0);
//! ```

use super::EvalError;

/// One point of a ROC curve: accepting every pair with `score >= threshold`
/// gives these rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocPoint {
    /// The score threshold (`+inf` for the first point, which accepts nothing).
    pub threshold: f64,
    /// False accept rate at this threshold.
    pub far: f64,
    /// True accept rate at this threshold.
    pub tar: f64,
}

/// The result of [`kfold_accuracy`].
#[derive(Debug, Clone, PartialEq)]
pub struct KFoldAccuracy {
    /// Mean held-out accuracy over the folds.
    pub mean: f64,
    /// Population standard deviation (divisor = number of folds, as numpy's
    /// default in the LFW evaluation scripts) of the held-out accuracies.
    pub std: f64,
    /// Mean of the thresholds chosen in the folds.
    pub threshold: f64,
    /// Held-out accuracy of each fold.
    pub fold_accuracies: Vec<f64>,
    /// Threshold chosen for each fold (on the other folds).
    pub fold_thresholds: Vec<f64>,
}

/// Checks the inputs and returns `(genuine pairs, impostor pairs)`.
fn validate(scores: &[f32], is_same: &[bool]) -> Result<(usize, usize), EvalError> {
    if scores.len() != is_same.len() {
        return Err(EvalError::LengthMismatch {
            scores: scores.len(),
            labels: is_same.len(),
        });
    }
    if scores.is_empty() {
        return Err(EvalError::Empty { what: "scores" });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(EvalError::NonFiniteScore { index, value });
    }
    let positives = is_same.iter().filter(|&&b| b).count();
    let negatives = is_same.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(EvalError::OneClass {
            positives,
            negatives,
        });
    }
    Ok((positives, negatives))
}

/// The ROC curve: one point per distinct score, by decreasing threshold,
/// starting at `(FAR 0, TAR 0)` (threshold `+inf`) and ending at `(1, 1)`.
///
/// ```
/// use metric_loss_core::eval::roc_curve;
///
/// let roc = roc_curve(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
/// let pts: Vec<(f64, f64)> = roc.iter().map(|p| (p.far, p.tar)).collect();
/// assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
/// ```
pub fn roc_curve(scores: &[f32], is_same: &[bool]) -> Result<Vec<RocPoint>, EvalError> {
    let (p, n) = validate(scores, is_same)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![RocPoint {
        threshold: f64::INFINITY,
        far: 0.0,
        tar: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if is_same[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: s as f64,
            far: fp as f64 / n as f64,
            tar: tp as f64 / p as f64,
        });
    }
    Ok(points)
}

/// Area under the ROC curve, computed as the Mann–Whitney statistic: the
/// probability that a random genuine pair scores higher than a random
/// impostor pair, ties counting 1/2.
///
/// ```
/// use metric_loss_core::eval::roc_auc;
///
/// // 3 of the 4 (genuine, impostor) combinations are ordered right.
/// let auc = roc_auc(&[0.8, 0.4, 0.6, 0.2], &[true, true, false, false]).unwrap();
/// assert_eq!(auc, 0.75);
/// ```
pub fn roc_auc(scores: &[f32], is_same: &[bool]) -> Result<f64, EvalError> {
    let (p, n) = validate(scores, is_same)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the genuine pairs.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        let start = i;
        let mut pos_in_group = 0usize;
        while i < order.len() && scores[order[i]] == s {
            pos_in_group += usize::from(is_same[order[i]]);
            i += 1;
        }
        let avg_rank = (start + 1 + i) as f64 / 2.0;
        rank_sum += avg_rank * pos_in_group as f64;
    }
    let (p, n) = (p as f64, n as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Equal error rate: the rate where FAR = FRR, linearly interpolated between
/// the two ROC points where `FAR - FRR` changes sign.
///
/// ```
/// use metric_loss_core::eval::eer;
///
/// // All scores tied: the ROC is the diagonal, FAR = FRR = 0.5 halfway.
/// assert_eq!(eer(&[1.0, 1.0, 1.0, 1.0], &[true, false, true, false]).unwrap(), 0.5);
/// ```
pub fn eer(scores: &[f32], is_same: &[bool]) -> Result<f64, EvalError> {
    let roc = roc_curve(scores, is_same)?;
    // d = FAR - FRR = FAR + TAR - 1 is non-decreasing along the curve, from
    // -1 at (0, 0) to +1 at (1, 1).
    let d = |p: &RocPoint| p.far + p.tar - 1.0;
    for w in roc.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (da, db) = (d(a), d(b));
        if da < 0.0 && db >= 0.0 {
            let alpha = -da / (db - da);
            return Ok(a.far + alpha * (b.far - a.far));
        }
    }
    // Unreachable for a valid curve (it ends at d = +1), but never panic.
    Ok(roc.last().map_or(1.0, |p| p.far))
}

/// True accept rate at a target false accept rate: the largest TAR over the
/// ROC points whose FAR is `<= far` (no interpolation).
///
/// # Errors
/// Besides the input checks, [`EvalError::InvalidFar`] unless `0 <= far <= 1`.
///
/// ```
/// use metric_loss_core::eval::tar_at_far;
///
/// let scores = [0.9, 0.7, 0.8, 0.2];
/// let same = [true, true, false, false];
/// // Accepting >= 0.9 gives FAR 0, TAR 1/2; >= 0.7 gives FAR 1/2, TAR 1.
/// assert_eq!(tar_at_far(&scores, &same, 0.0).unwrap(), 0.5);
/// assert_eq!(tar_at_far(&scores, &same, 0.5).unwrap(), 1.0);
/// ```
pub fn tar_at_far(scores: &[f32], is_same: &[bool], far: f64) -> Result<f64, EvalError> {
    if !(0.0..=1.0).contains(&far) {
        return Err(EvalError::InvalidFar { far });
    }
    let roc = roc_curve(scores, is_same)?;
    Ok(roc
        .iter()
        .filter(|p| p.far <= far)
        .map(|p| p.tar)
        .fold(0.0, f64::max))
}

/// Best-threshold accuracy with `folds`-fold cross-validation, as in the LFW
/// protocol (use `folds = 10`).
///
/// The pairs are cut, in their given order, into `folds` contiguous blocks
/// (fold `f` is `pairs[f*n/folds .. (f+1)*n/folds]`). For each fold the
/// threshold that maximises accuracy on the other folds is chosen and the
/// accuracy of `score >= threshold` is measured on the held-out fold.
///
/// Candidate thresholds are the midpoints between consecutive distinct
/// training scores, plus one below the lowest score and one above the
/// highest (mirroring the nearest midpoint; `±0.5` if all training scores
/// are equal). Among equally accurate candidates the lowest is taken.
///
/// # Errors
/// Besides the input checks, [`EvalError::InvalidFolds`] if `folds < 2` and
/// [`EvalError::TooFewPairs`] if there are fewer pairs than folds.
///
/// ```
/// use metric_loss_core::eval::kfold_accuracy;
///
/// let scores = [0.9, 0.1, 0.8, 0.2];
/// let same = [true, false, true, false];
/// let acc = kfold_accuracy(&scores, &same, 2).unwrap();
/// assert_eq!(acc.mean, 1.0);
/// assert_eq!(acc.std, 0.0);
/// ```
pub fn kfold_accuracy(
    scores: &[f32],
    is_same: &[bool],
    folds: usize,
) -> Result<KFoldAccuracy, EvalError> {
    validate(scores, is_same)?;
    if folds < 2 {
        return Err(EvalError::InvalidFolds { folds });
    }
    let n = scores.len();
    if n < folds {
        return Err(EvalError::TooFewPairs { pairs: n, folds });
    }
    let mut fold_accuracies = Vec::with_capacity(folds);
    let mut fold_thresholds = Vec::with_capacity(folds);
    let mut train: Vec<(f64, bool)> = Vec::with_capacity(n);
    for f in 0..folds {
        let (lo, hi) = (f * n / folds, (f + 1) * n / folds);
        train.clear();
        train.extend(
            (0..n)
                .filter(|&i| i < lo || i >= hi)
                .map(|i| (scores[i] as f64, is_same[i])),
        );
        let t = best_threshold(&mut train);
        let correct = (lo..hi)
            .filter(|&i| (scores[i] as f64 >= t) == is_same[i])
            .count();
        fold_accuracies.push(correct as f64 / (hi - lo) as f64);
        fold_thresholds.push(t);
    }
    let k = folds as f64;
    let mean = fold_accuracies.iter().sum::<f64>() / k;
    let var = fold_accuracies
        .iter()
        .map(|a| (a - mean) * (a - mean))
        .sum::<f64>()
        / k;
    Ok(KFoldAccuracy {
        mean,
        std: var.sqrt(),
        threshold: fold_thresholds.iter().sum::<f64>() / k,
        fold_accuracies,
        fold_thresholds,
    })
}

/// The threshold maximising the accuracy of `score >= t` on `pairs`
/// (non-empty), see [`kfold_accuracy`].
fn best_threshold(pairs: &mut [(f64, bool)]) -> f64 {
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // Distinct scores with (genuine, impostor) counts, ascending.
    let mut groups: Vec<(f64, usize, usize)> = Vec::new();
    for &(s, same) in pairs.iter() {
        match groups.last_mut() {
            Some(g) if g.0 == s => {
                if same {
                    g.1 += 1;
                } else {
                    g.2 += 1;
                }
            }
            _ => groups.push((s, usize::from(same), usize::from(!same))),
        }
    }
    let m = groups.len();
    // Candidate j rejects groups 0..j and accepts groups j..m.
    let candidate = |j: usize| -> f64 {
        if m == 1 {
            return if j == 0 {
                groups[0].0 - 0.5
            } else {
                groups[0].0 + 0.5
            };
        }
        if j == 0 {
            groups[0].0 - (groups[1].0 - groups[0].0) / 2.0
        } else if j == m {
            groups[m - 1].0 + (groups[m - 1].0 - groups[m - 2].0) / 2.0
        } else {
            (groups[j - 1].0 + groups[j].0) / 2.0
        }
    };
    // Accept all: every genuine pair is right.
    let mut correct: isize = groups.iter().map(|g| g.1 as isize).sum();
    let (mut best, mut best_j) = (correct, 0);
    for (j, g) in groups.iter().enumerate() {
        correct += g.2 as isize - g.1 as isize;
        if correct > best {
            best = correct;
            best_j = j + 1;
        }
    }
    candidate(best_j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn perfect_separation() {
        let s = [3.0, 2.0, 1.0, 0.0];
        let y = [true, true, false, false];
        assert_eq!(roc_auc(&s, &y).unwrap(), 1.0);
        assert_eq!(eer(&s, &y).unwrap(), 0.0);
        assert_eq!(tar_at_far(&s, &y, 0.0).unwrap(), 1.0);
        let k = kfold_accuracy(&[3.0, 0.0, 2.0, 1.0], &[true, false, true, false], 2).unwrap();
        assert_eq!(k.fold_accuracies, vec![1.0, 1.0]);
    }

    /// Genuine pairs all score below impostors: AUC 0. ROC: (0,0), (1/2,0),
    /// (1,0), (1,1/2), (1,1); FAR - FRR reaches 0 at (1,0): EER = 1.
    #[test]
    fn fully_inverted() {
        let s = [0.0, 1.0, 2.0, 3.0];
        let y = [true, true, false, false];
        assert_eq!(roc_auc(&s, &y).unwrap(), 0.0);
        assert_eq!(eer(&s, &y).unwrap(), 1.0);
        assert_eq!(tar_at_far(&s, &y, 0.99).unwrap(), 0.0);
        assert_eq!(tar_at_far(&s, &y, 1.0).unwrap(), 1.0);
    }

    /// ROC is (0,0) -> (1,1): AUC 1/2 and FAR = FRR = 1/2 in the middle.
    #[test]
    fn all_tied() {
        let s = [0.3; 5];
        let y = [true, false, false, true, false];
        assert_eq!(roc_auc(&s, &y).unwrap(), 0.5);
        assert_eq!(eer(&s, &y).unwrap(), 0.5);
        assert_eq!(tar_at_far(&s, &y, 0.5).unwrap(), 0.0);
    }

    /// genuine: 0.9, 0.6, 0.4; impostor: 0.6, 0.5, 0.2, 0.1 (P = 3, N = 4).
    ///
    /// AUC: 0.9 beats 4; 0.6 ties 0.6 (1/2) and beats 3; 0.4 beats 2:
    ///      (4 + 3.5 + 2) / 12 = 9.5 / 12.
    /// ROC (FAR, TAR): (0,0) t=inf, (0,1/3) t=.9, (1/4,2/3) t=.6,
    ///      (1/2,2/3) t=.5, (1/2,1) t=.4, (3/4,1) t=.2, (1,1) t=.1.
    /// FAR - FRR: -1, -2/3, -1/12, +1/6, ... -> sign change between
    ///      (1/4,2/3) and (1/2,2/3); alpha = (1/12)/(1/4) = 1/3;
    ///      EER = 1/4 + 1/3 * 1/4 = 1/3 (FRR there = 1/3 too).
    /// TAR@FAR: 0 -> 1/3, 0.2 -> 1/3, 0.25 -> 2/3, 0.5 -> 1.
    #[test]
    fn small_hand_worked_case() {
        let s = [0.9, 0.6, 0.6, 0.5, 0.4, 0.2, 0.1];
        let y = [true, true, false, false, true, false, false];
        assert!(close(roc_auc(&s, &y).unwrap(), 9.5 / 12.0));
        assert!(close(eer(&s, &y).unwrap(), 1.0 / 3.0));
        assert!(close(tar_at_far(&s, &y, 0.0).unwrap(), 1.0 / 3.0));
        assert!(close(tar_at_far(&s, &y, 0.2).unwrap(), 1.0 / 3.0));
        assert!(close(tar_at_far(&s, &y, 0.25).unwrap(), 2.0 / 3.0));
        assert!(close(tar_at_far(&s, &y, 0.5).unwrap(), 1.0));
        let roc = roc_curve(&s, &y).unwrap();
        let pts: Vec<(f64, f64)> = roc.iter().map(|p| (p.far, p.tar)).collect();
        let want = [
            (0.0, 0.0),
            (0.0, 1.0 / 3.0),
            (0.25, 2.0 / 3.0),
            (0.5, 2.0 / 3.0),
            (0.5, 1.0),
            (0.75, 1.0),
            (1.0, 1.0),
        ];
        assert_eq!(pts.len(), want.len());
        for (g, w) in pts.iter().zip(&want) {
            assert!(close(g.0, w.0) && close(g.1, w.1), "{pts:?}");
        }
        // Order of the pairs does not matter.
        let mut rev_s = s;
        let mut rev_y = y;
        rev_s.reverse();
        rev_y.reverse();
        assert!(close(roc_auc(&rev_s, &rev_y).unwrap(), 9.5 / 12.0));
        assert!(close(eer(&rev_s, &rev_y).unwrap(), 1.0 / 3.0));
    }

    /// 10 folds of 2 pairs (one genuine, one impostor each). Genuine pairs
    /// score 2 and impostors 0, except fold 0 where they are swapped.
    /// Fold 0 held out: training is 9 genuine at 2, 9 impostors at 0;
    ///   candidates -1 (9 right), 1 (18), 3 (9) -> t = 1; fold 0 gets 0/2.
    /// Fold k > 0 held out: training has 8+1 genuine at 2/0 and 8+1
    ///   impostors at 0/2; candidates -1 (9), 1 (16), 3 (9) -> t = 1;
    ///   fold k gets 2/2.
    /// Mean 0.9, std sqrt(0.9 - 0.81) = 0.3, mean threshold 1.
    #[test]
    fn ten_fold_hand_worked() {
        let mut s = Vec::new();
        let mut y = Vec::new();
        for f in 0..10 {
            let (g, i) = if f == 0 { (0.0, 2.0) } else { (2.0, 0.0) };
            s.extend([g, i]);
            y.extend([true, false]);
        }
        let k = kfold_accuracy(&s, &y, 10).unwrap();
        let mut want = vec![1.0; 10];
        want[0] = 0.0;
        assert_eq!(k.fold_accuracies, want);
        assert_eq!(k.fold_thresholds, vec![1.0; 10]);
        assert!(close(k.mean, 0.9));
        assert!(close(k.std, 0.3));
        assert!(close(k.threshold, 1.0));
    }

    /// Fold A = (0.1 F, 0.4 T, 0.35 F, 0.8 T), fold B = (0.2 F, 0.5 F, 0.6 T, 0.9 T).
    /// A held out: B is separated between 0.5 and 0.6 -> t = 0.55;
    ///   on A: 0.1 F right, 0.4 T wrong, 0.35 F right, 0.8 T right: 3/4.
    /// B held out: A is separated between 0.35 and 0.4 -> t = 0.375;
    ///   on B: 0.2 F right, 0.5 F wrong, 0.6 T and 0.9 T right: 3/4.
    /// Mean 0.75, std 0, mean threshold 0.4625.
    #[test]
    fn two_fold_midpoint_thresholds() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.5, 0.6, 0.9];
        let y = [false, true, false, true, false, false, true, true];
        let k = kfold_accuracy(&s, &y, 2).unwrap();
        assert_eq!(k.fold_accuracies, vec![0.75, 0.75]);
        assert!((k.fold_thresholds[0] - 0.55).abs() < 1e-6, "{k:?}");
        assert!((k.fold_thresholds[1] - 0.375).abs() < 1e-6, "{k:?}");
        assert!((k.threshold - 0.4625).abs() < 1e-6);
        assert_eq!((k.mean, k.std), (0.75, 0.0));
    }

    /// Folds [0,1] and [2,3].
    /// Fold 0 held out: training (5 F, 1 T) has distinct scores 1 and 5;
    ///   candidates -1 (accept all: 1 right), 3 (0 right), 7 (reject all:
    ///   1 right) -> the lowest of the tied best, -1; held-out 1 T, 1 T are
    ///   both accepted: 2/2.
    /// Fold 1 held out: training (1 T, 1 T) has a single score: candidates
    ///   0.5 (2 right) and 1.5 (0 right) -> 0.5; held-out 5 F is wrongly
    ///   accepted, 1 T rightly: 1/2.
    #[test]
    fn ties_in_training_accuracy_take_the_lowest_threshold() {
        let s = [1.0, 1.0, 5.0, 1.0];
        let y = [true, true, false, true];
        let k = kfold_accuracy(&s, &y, 2).unwrap();
        assert_eq!(k.fold_thresholds, vec![-1.0, 0.5]);
        assert_eq!(k.fold_accuracies, vec![1.0, 0.5]);
        assert_eq!(k.mean, 0.75);
        assert_eq!(k.std, 0.25);
    }

    #[test]
    fn errors() {
        assert_eq!(roc_auc(&[], &[]), Err(EvalError::Empty { what: "scores" }));
        assert_eq!(
            eer(&[1.0], &[true, false]),
            Err(EvalError::LengthMismatch {
                scores: 1,
                labels: 2
            })
        );
        assert_eq!(
            roc_auc(&[1.0, 2.0], &[true, true]),
            Err(EvalError::OneClass {
                positives: 2,
                negatives: 0
            })
        );
        assert!(matches!(
            tar_at_far(&[1.0, f32::NAN], &[true, false], 0.1),
            Err(EvalError::NonFiniteScore { index: 1, .. })
        ));
        assert_eq!(
            tar_at_far(&[1.0, 0.0], &[true, false], 1.5),
            Err(EvalError::InvalidFar { far: 1.5 })
        );
        assert!(matches!(
            tar_at_far(&[1.0, 0.0], &[true, false], f64::NAN),
            Err(EvalError::InvalidFar { .. })
        ));
        assert_eq!(
            kfold_accuracy(&[1.0, 0.0, 1.0], &[true, false, true], 10),
            Err(EvalError::TooFewPairs {
                pairs: 3,
                folds: 10
            })
        );
        assert_eq!(
            kfold_accuracy(&[1.0, 0.0], &[true, false], 1),
            Err(EvalError::InvalidFolds { folds: 1 })
        );
        assert!(matches!(
            roc_curve(&[f32::INFINITY, 0.0], &[true, false]),
            Err(EvalError::NonFiniteScore { index: 0, .. })
        ));
    }
}
