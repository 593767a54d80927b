//! The `#[metric_loss(...)]` attribute macro of
//! [metric-loss](https://docs.rs/metric-loss). Use it through that crate.
//!
//! Three rooms, as in `thiserror-impl` and `serde_derive`: `spec.rs` parses the
//! attribute into a plain `Spec` value and validates it, collecting every
//! error with its span; `expand.rs` turns a valid spec into dfdx tape code; on
//! error, the errors are emitted *with* the item, so the user sees one message.

extern crate proc_macro;

mod expand;
mod family;
#[cfg(test)]
mod fuzz;
mod spec;

use proc_macro::TokenStream;

/// Declares a metric loss on a unit struct.
///
/// ```
/// use metric_loss::prelude::*;
///
/// /// FaceNet: squared Euclidean distances on unit-length embeddings.
/// #[metric_loss(triplet, distance = euclidean, squared, normalize, margin = 0.2)]
/// pub struct FaceNet;
///
/// /// The classic contrastive loss: (1-Y) D^2 + Y max(0, m - D)^2.
/// #[metric_loss(pair, distance = euclidean, squared, margin = 1.0)]
/// pub struct Contrastive;
///
/// let dev = Cpu::default();
/// let a = dev.tensor([[0.0f32, 0.0], [1.0, 0.0]]);
/// let b = dev.tensor([[0.6f32, 0.8], [1.0, 0.5]]);
/// let labels = PairLabels::from_pairs(&[Pair::Similar, Pair::Dissimilar]);
/// // similar: D^2 = 1; dissimilar: (1 - 0.5)^2 = 0.25; mean 0.625
/// let loss = Contrastive.forward(a, b, &labels);
/// assert!((loss.array() - 0.625).abs() < 1e-6);
/// ```
///
/// # Grammar
///
/// `#[metric_loss(key, key = value, ...)]`, keys in any order, each at most once:
///
/// | key | values | default | meaning |
/// |-----|--------|---------|---------|
/// | `pair` / `triplet` | flag, exactly one | — | contrastive loss on pairs, or triplet loss |
/// | `distance` | `euclidean`, `cosine`, `manhattan`, `dot`, or a path with `::` to your function | `euclidean` | the distance `d` |
/// | `squared` | flag | off | triplet: `d²` in the hinge; pair: squared hinges `[·]+²` |
/// | `margin` | number `>= 0` | required (optional with `soft`, then 0) | `m` |
/// | `pos_margin` | number `>= 0`, `< margin` | 0 | pair only: similar pairs closer than this cost nothing |
/// | `swap` | flag | off | triplet only: `d(A,N)` becomes `min(d(A,N), d(P,N))` |
/// | `soft` | flag | off | triplet only: `softplus(x)` instead of `[x]+` |
/// | `normalize` | flag | off | L2-normalize embeddings before the distance |
/// | `reduction` | `mean`, `sum`, `none`, `mean_nonzero` | `mean` | `none` returns one loss per item |
/// | `crate` | a path | `::metric_loss` | where the library is, for re-exports |
///
/// Formulas: pair `L = (1 − Y)·[D − pos_margin]+^p + Y·[m − D]+^p` with `Y = 1`
/// for a dissimilar pair and `p = 2` when `squared`; triplet
/// `L = [d(A,P) − d(A,N) + m]+`.
///
/// A user distance is a function generic like the built-in ones in
/// `metric_loss::distance`:
///
/// ```
/// use metric_loss::prelude::*;
///
/// /// Squared Euclidean distance, divided by the width.
/// pub fn mean_squared<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
///     a: Tensor<(B, Const<D>), f32, Dev, T>,
///     b: Tensor<(B, Const<D>), f32, Dev, T>,
/// ) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
///     a.try_sub(b)?.try_square()?.try_mean::<(B,), Axis<1>>()
/// }
///
/// #[metric_loss(triplet, distance = self::mean_squared, margin = 0.5)]
/// pub struct MyLoss;
///
/// fn main() {
///     let dev = Cpu::default();
///     let a = dev.tensor([[0.0f32, 0.0]]);
///     let p = dev.tensor([[1.0f32, 1.0]]);
///     let n = dev.tensor([[2.0f32, 0.0]]);
///     // [1 - 2 + 0.5]+ = 0
///     assert_eq!(MyLoss.forward(a, p, n).array(), 0.0);
/// }
/// ```
///
/// Specs that make no sense do not compile, and the error points at the token:
///
/// ```compile_fail
/// use metric_loss::prelude::*;
/// #[metric_loss(pair, swap, margin = 1.0)] // `swap` applies to triplet losses only
/// pub struct Nonsense;
/// ```
///
/// ```compile_fail
/// use metric_loss::prelude::*;
/// #[metric_loss(triplet, distance = euclidian, margin = 0.2)] // did you mean `euclidean`?
/// pub struct Typo;
/// ```
#[proc_macro_attribute]
pub fn metric_loss(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.clone().into();
    let parsed: syn::Item = match syn::parse(item) {
        Ok(i) => i,
        Err(e) => {
            let err = e.to_compile_error();
            return quote::quote!(#item2 #err).into();
        }
    };
    let spec = spec::parse(args.into());
    let checked = spec::check_item(&parsed);
    match (spec, checked) {
        (Ok(spec::Declared::Classic(spec)), Ok(s)) => {
            let imp = expand::expand(&spec, s);
            quote::quote!(#parsed #imp).into()
        }
        (Ok(spec::Declared::Family(spec)), Ok(s)) => {
            let imp = expand::expand_family(&spec, s);
            quote::quote!(#parsed #imp).into()
        }
        (spec, checked) => {
            let mut errors: Option<syn::Error> = None;
            for e in [spec.err(), checked.err()].into_iter().flatten() {
                match &mut errors {
                    Some(all) => all.combine(e),
                    None => errors = Some(e),
                }
            }
            let errors = errors.map(|e| e.to_compile_error());
            quote::quote!(#parsed #errors).into()
        }
    }
}
