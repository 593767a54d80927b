//! Expand: a valid [`Spec`] -> dfdx tape code, specialised to the spec.
//!
//! Nothing here branches at run time on the spec: each key decides which
//! tokens are written.

use crate::spec::{Arity, Distance, Reduction, Spec};
use proc_macro2::TokenStream;
use quote::quote;

pub fn expand(spec: &Spec, item: &syn::ItemStruct) -> TokenStream {
    let k = &spec.krate;
    let name = &item.ident;
    let dfdx = quote!(#k::__private::dfdx);
    let margin = spec.margin;
    let pos_margin = spec.pos_margin;
    let distance_name = spec.distance.name();
    let (squared, normalize, swap, soft) = (spec.squared, spec.normalize, spec.swap, spec.soft);
    let (arity, trait_name, family) = match spec.arity {
        Arity::Pair => (quote!(Pair), quote!(PairCriterion), quote!(PairFamily)),
        Arity::Triplet => (
            quote!(Triplet),
            quote!(TripletCriterion),
            quote!(TripletFamily),
        ),
    };
    let (reduction, output, reduce_fn) = match spec.reduction {
        Reduction::Mean => (quote!(Mean), quote!(()), quote!(mean)),
        Reduction::Sum => (quote!(Sum), quote!(()), quote!(sum)),
        Reduction::None => (quote!(None), quote!((B,)), quote!(none)),
        Reduction::MeanNonzero => (quote!(MeanNonzero), quote!(()), quote!(mean_nonzero)),
    };

    // `squared` squares the distance of a triplet loss; for a pair loss it
    // squares the hinges instead (the classic contrastive form).
    let square_distance = spec.squared && spec.arity == Arity::Triplet;
    let embed = if spec.normalize {
        quote!(#k::distance::l2_normalize(x))
    } else {
        quote!(::core::result::Result::Ok(x))
    };
    let row_fn = |a: TokenStream, b: TokenStream| match &spec.distance {
        Distance::Euclidean if square_distance => quote!(#k::distance::squared_euclidean(#a, #b)),
        Distance::Euclidean => quote!(#k::distance::euclidean(#a, #b)),
        Distance::Cosine => quote!(#k::distance::cosine(#a, #b)),
        Distance::Manhattan => quote!(#k::distance::manhattan(#a, #b)),
        Distance::Dot => quote!(#k::distance::dot(#a, #b)),
        Distance::Custom(path) => quote!(#path(#a, #b)),
    };
    let square_if = |t: TokenStream| {
        if square_distance && !matches!(spec.distance, Distance::Euclidean) {
            quote!(#t?.try_square())
        } else {
            t
        }
    };
    let distance_rows = square_if(row_fn(quote!(a), quote!(b)));
    let distance_matrix = match &spec.distance {
        Distance::Euclidean if square_distance => quote!(#k::distance::squared_euclidean_matrix(x)),
        Distance::Euclidean => quote!(#k::distance::euclidean_matrix(x)),
        Distance::Cosine => square_if(quote!(#k::distance::cosine_matrix(x))),
        Distance::Dot => quote!(#k::distance::dot_matrix(x)),
        Distance::Manhattan | Distance::Custom(_) => {
            let f = square_if(row_fn(quote!(a), quote!(b)));
            quote!(#k::distance::matrix_by_rows(x, |a, b| #f))
        }
    };

    let formula = match spec.arity {
        Arity::Triplet => {
            let d_an = if spec.swap {
                quote! {
                    let d_an = match d_pn {
                        ::core::option::Option::Some(d_pn) => d_an.try_minimum(d_pn)?,
                        ::core::option::Option::None => d_an,
                    };
                }
            } else {
                quote!(let _ = d_pn;)
            };
            let hinge = if spec.soft {
                quote!(#k::loss::reduce::softplus(d_ap.try_sub(d_an)?.try_add(margin)?)?)
            } else {
                quote!(#k::loss::reduce::hinge(d_ap.try_sub(d_an)?.try_add(margin)?)?)
            };
            quote! {
                fn try_from_distances<B: #dfdx::shapes::Dim, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                    margin: f32,
                    d_ap: #dfdx::tensor::Tensor<(B,), f32, Dev, T>,
                    d_an: #dfdx::tensor::Tensor<(B,), f32, Dev, T>,
                    d_pn: ::core::option::Option<#dfdx::tensor::Tensor<(B,), f32, Dev, T>>,
                ) -> ::core::result::Result<#dfdx::tensor::Tensor<Self::Output<B>, f32, Dev, T>, Dev::Err> {
                    use #dfdx::prelude::*;
                    if d_ap.shape().0.size() == 0 {
                        // Nothing mined: dfdx's elementwise kernels reject
                        // empty tensors, so no formula; zero, with the tape.
                        return #k::loss::reduce::#reduce_fn(d_ap);
                    }
                    #d_an
                    let per_item = #hinge;
                    #k::loss::reduce::#reduce_fn(per_item)
                }
            }
        }
        Arity::Pair => {
            let p2 = |t: TokenStream| {
                if spec.squared {
                    quote!(#t.try_square()?)
                } else {
                    t
                }
            };
            // [D - pos_margin]+ is D itself when pos_margin = 0 and D >= 0.
            let similar = if spec.pos_margin == 0.0
                && !matches!(spec.distance, Distance::Dot | Distance::Custom(_))
            {
                p2(quote!(d.clone().put_tape(tape)))
            } else {
                p2(quote!(#k::loss::reduce::hinge(d.clone().put_tape(tape).try_sub(#pos_margin)?)?))
            };
            let dissimilar = p2(quote!(#k::loss::reduce::hinge(
                d.retaped::<T>().try_negate()?.try_add(margin)?
            )?));
            quote! {
                fn try_from_distances<B: #dfdx::shapes::Dim, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                    margin: f32,
                    d: #dfdx::tensor::Tensor<(B,), f32, Dev, T>,
                    dissimilar: #dfdx::tensor::Tensor<(B,), f32, Dev>,
                ) -> ::core::result::Result<#dfdx::tensor::Tensor<Self::Output<B>, f32, Dev, T>, Dev::Err> {
                    use #dfdx::prelude::*;
                    if d.shape().0.size() == 0 {
                        return #k::loss::reduce::#reduce_fn(d);
                    }
                    let (d, tape) = d.split_tape();
                    let similar = dissimilar.clone().try_negate()?.try_add(1.0)?;
                    let per_item = (#similar).try_mul(similar)?
                        .try_add((#dissimilar).try_mul(dissimilar)?)?;
                    #k::loss::reduce::#reduce_fn(per_item)
                }
            }
        }
    };

    quote! {
        #[allow(clippy::all, clippy::pedantic)]
        impl #k::loss::MetricSpace for #name {
            const L2_NORMALIZES: bool = #normalize;

            fn try_embed<B: #dfdx::shapes::Dim, const D: usize, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                x: #dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>,
            ) -> ::core::result::Result<#dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>, Dev::Err> {
                #embed
            }

            fn try_distance<B: #dfdx::shapes::Dim, const D: usize, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                a: #dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>,
                b: #dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>,
            ) -> ::core::result::Result<#dfdx::tensor::Tensor<(B,), f32, Dev, T>, Dev::Err> {
                use #dfdx::prelude::*;
                #distance_rows
            }

            fn try_distance_matrix<N: #dfdx::shapes::Dim, const D: usize, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                x: #dfdx::tensor::Tensor<(N, #dfdx::shapes::Const<D>), f32, Dev, T>,
            ) -> ::core::result::Result<#dfdx::tensor::Tensor<(N, N), f32, Dev, T>, Dev::Err> {
                use #dfdx::prelude::*;
                #distance_matrix
            }
        }

        #[allow(clippy::all, clippy::pedantic)]
        impl #k::loss::MetricLoss for #name {
            type Family = #k::loss::#family;
        }

        #[allow(clippy::all, clippy::pedantic)]
        impl #k::loss::#trait_name for #name {
            type Output<B: #dfdx::shapes::Dim> = #output;
            const SPEC: #k::loss::LossSpec = #k::loss::LossSpec {
                arity: #k::loss::Arity::#arity,
                distance: #distance_name,
                squared: #squared,
                normalize: #normalize,
                swap: #swap,
                soft: #soft,
                margin: #margin,
                pos_margin: #pos_margin,
                reduction: #k::loss::Reduction::#reduction,
            };

            #formula
        }
    }
}

/// A loss of the ranking family: its metric space (L2-normalized, the
/// formula's distance), its family, and its formula with the declared numbers.
pub fn expand_family(spec: &crate::family::FamilySpec, item: &syn::ItemStruct) -> TokenStream {
    let k = &spec.krate;
    let name = &item.ident;
    let dfdx = quote!(#k::__private::dfdx);
    let formula = syn::Ident::new(spec.def.formula, proc_macro2::Span::call_site());
    let formula = quote!(#k::formulas::#formula);
    let value = if spec.values.is_empty() {
        quote!(#formula)
    } else {
        let fields = spec.values.iter().map(|(field, v)| {
            let field = syn::Ident::new(field, proc_macro2::Span::call_site());
            quote!(#field: #v)
        });
        quote!(#formula { #(#fields),* })
    };
    quote! {
        #[allow(clippy::all, clippy::pedantic)]
        impl #k::loss::MetricSpace for #name {
            // `space::try_embed` is `l2_normalize`: a fused kernel may do it
            const L2_NORMALIZES: bool = true;

            fn try_embed<B: #dfdx::shapes::Dim, const D: usize, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                x: #dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>,
            ) -> ::core::result::Result<#dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>, Dev::Err> {
                #k::formulas::space::try_embed(x)
            }

            fn try_distance<B: #dfdx::shapes::Dim, const D: usize, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                a: #dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>,
                b: #dfdx::tensor::Tensor<(B, #dfdx::shapes::Const<D>), f32, Dev, T>,
            ) -> ::core::result::Result<#dfdx::tensor::Tensor<(B,), f32, Dev, T>, Dev::Err> {
                #k::formulas::space::try_distance::<#formula, B, D, Dev, T>(a, b)
            }

            fn try_distance_matrix<N: #dfdx::shapes::Dim, const D: usize, Dev: #k::device::MetricDevice, T: #dfdx::tensor::Tape<f32, Dev>>(
                x: #dfdx::tensor::Tensor<(N, #dfdx::shapes::Const<D>), f32, Dev, T>,
            ) -> ::core::result::Result<#dfdx::tensor::Tensor<(N, N), f32, Dev, T>, Dev::Err> {
                #k::formulas::space::try_distance_matrix::<#formula, N, D, Dev, T>(x)
            }
        }

        #[allow(clippy::all, clippy::pedantic)]
        impl #k::loss::MetricLoss for #name {
            type Family = #k::loss::BatchFamily;
        }

        #[allow(clippy::all, clippy::pedantic)]
        impl #k::loss::BatchCriterion for #name {
            type Formula = #formula;
            fn formula(&self) -> Self::Formula {
                #value
            }
        }
    }
}
