//! The ranking family's specs: `#[metric_loss(multi_similarity, alpha = 2, ...)]`.
//! One table of families and their keys (named after pytorch-metric-learning's
//! constructor arguments, with its defaults), parsed and validated with
//! spanned errors, every one collected.

use crate::spec::{Entry, Errors, did_you_mean, parse_path, parse_signed_number};
use proc_macro2::Span;

/// What a key's value must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Finite and `> 0`.
    Positive,
    /// Finite and `>= 0`.
    NonNegative,
    /// Finite.
    Finite,
    /// In `[0, 0.5)` (circle's `m`).
    BelowHalf,
}

/// One key of a family.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    pub name: &'static str,
    pub default: f32,
    pub rule: Rule,
    /// Why the rule, for the error message.
    pub why: &'static str,
}

/// One family: its flag, PML's class, the formula type in `metric_loss::formulas`.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDef {
    pub flag: &'static str,
    pub pml: &'static str,
    pub formula: &'static str,
    pub keys: &'static [KeyDef],
    /// What PML measures with, for "`distance` does not apply" messages.
    pub distance: &'static str,
    /// PML's default reducer, for "`reduction` does not apply" messages.
    pub reducer: &'static str,
}

const fn key(name: &'static str, default: f32, rule: Rule, why: &'static str) -> KeyDef {
    KeyDef {
        name,
        default,
        rule,
        why,
    }
}

const TEMPERATURE: &str = "the similarities are divided by it";
const COSINE: &str = "cosine similarity of L2-normalized embeddings (PML's `CosineSimilarity()`)";
const EUCLIDEAN: &str = "Euclidean distance of L2-normalized embeddings (PML's `LpDistance()`)";
const LIFTED_KEYS: &[KeyDef] = &[
    key("neg_margin", 1.0, Rule::NonNegative, "a distance"),
    key("pos_margin", 0.0, Rule::NonNegative, "a distance"),
];

/// Every family, in the order of the docs.
pub const FAMILIES: &[FamilyDef] = &[
    FamilyDef {
        flag: "multi_similarity",
        pml: "MultiSimilarityLoss",
        formula: "MultiSimilarity",
        keys: &[
            key(
                "alpha",
                2.0,
                Rule::Positive,
                "the positive term is divided by it",
            ),
            key(
                "beta",
                50.0,
                Rule::Positive,
                "the negative term is divided by it",
            ),
            key("base", 0.5, Rule::Finite, "a similarity"),
        ],
        distance: COSINE,
        reducer: "MeanReducer",
    },
    FamilyDef {
        flag: "ntxent",
        pml: "NTXentLoss",
        formula: "NtXent",
        keys: &[key("temperature", 0.07, Rule::Positive, TEMPERATURE)],
        distance: COSINE,
        reducer: "MeanReducer",
    },
    FamilyDef {
        flag: "supcon",
        pml: "SupConLoss",
        formula: "SupCon",
        keys: &[key("temperature", 0.1, Rule::Positive, TEMPERATURE)],
        distance: COSINE,
        reducer: "AvgNonZeroReducer",
    },
    FamilyDef {
        flag: "circle",
        pml: "CircleLoss",
        formula: "Circle",
        keys: &[
            key(
                "m",
                0.4,
                Rule::BelowHalf,
                "at 0.5 or more the negatives' optimum `m` is not below the positives' `1 - m`",
            ),
            key(
                "gamma",
                80.0,
                Rule::Positive,
                "it scales every logit; 0 or less gives no gradient or the wrong sign",
            ),
        ],
        distance: COSINE,
        reducer: "AvgNonZeroReducer",
    },
    FamilyDef {
        flag: "lifted_structure",
        pml: "LiftedStructureLoss",
        formula: "LiftedStructure",
        keys: LIFTED_KEYS,
        distance: EUCLIDEAN,
        reducer: "MeanReducer",
    },
    FamilyDef {
        flag: "generalized_lifted_structure",
        pml: "GeneralizedLiftedStructureLoss",
        formula: "GeneralizedLiftedStructure",
        keys: LIFTED_KEYS,
        distance: EUCLIDEAN,
        reducer: "MeanReducer",
    },
    FamilyDef {
        flag: "npairs",
        pml: "NPairsLoss",
        formula: "NPairs",
        keys: &[],
        distance: COSINE,
        reducer: "MeanReducer",
    },
    FamilyDef {
        flag: "margin_loss",
        pml: "MarginLoss",
        formula: "Margin",
        keys: &[
            key(
                "margin",
                0.2,
                Rule::NonNegative,
                "a distance around the boundary",
            ),
            key("nu", 0.0, Rule::NonNegative, "a penalty weight"),
            key("beta", 1.2, Rule::Finite, "a distance"),
        ],
        distance: EUCLIDEAN,
        reducer: "DivisorReducer",
    },
];

/// The family named by `flag`, if any.
pub fn family(flag: &str) -> Option<&'static FamilyDef> {
    FAMILIES.iter().find(|f| f.flag == flag)
}

/// Every family flag, for messages and did-you-mean.
pub fn flags() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.flag).collect()
}

/// The families that have a key `name` (`temperature`: ntxent, supcon).
pub fn owners(name: &str) -> Vec<&'static str> {
    FAMILIES
        .iter()
        .filter(|f| f.keys.iter().any(|k| k.name == name))
        .map(|f| f.flag)
        .collect()
}

/// A valid family spec: the family and every key's value (defaults filled in).
#[derive(Clone)]
pub struct FamilySpec {
    pub def: &'static FamilyDef,
    pub values: Vec<(&'static str, f32)>,
    pub krate: syn::Path,
}

/// Keys of the pair and triplet losses that mean nothing to a family, with why.
fn classic_key_reason(def: &FamilyDef, name: &str) -> Option<String> {
    let loss = format!("a `{}` loss", def.flag);
    match name {
        "distance" | "squared" | "normalize" => Some(format!(
            "`{name}` does not apply to {loss}: it measures with {} ({} in PML 2.9)",
            def.distance, def.pml
        )),
        "reduction" => Some(format!(
            "`reduction` does not apply to {loss}: it reduces as PML's `{}` does",
            def.reducer
        )),
        "swap" | "soft" => Some(format!(
            "`{name}` applies to triplet losses only, not to {loss}"
        )),
        _ => None,
    }
}

/// Parses and validates a family spec from its entries (one of which is a
/// family flag), collecting every error.
pub fn parse_family(entries: Vec<Entry>) -> Result<FamilySpec, syn::Error> {
    let mut errs = Errors::default();
    let mut def: Option<(&'static FamilyDef, Span)> = None;
    let mut other_kind: Option<(String, Span)> = None;
    let mut krate: Option<syn::Path> = None;
    let mut given: Vec<(&'static str, f32, Span)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut rest: Vec<Entry> = Vec::new();
    // first the kind: exactly one family (no pair, no triplet)
    for e in entries {
        let name = e.key.to_string();
        if let Some(f) = family(&name) {
            if let Some(v) = &e.value {
                errs.push(syn::Error::new_spanned(
                    v,
                    format!("`{name}` is a flag and takes no value: write `{name}` alone"),
                ));
            }
            match &def {
                Some((first, _)) => errs.spanned(
                    e.key.span(),
                    format!(
                        "a loss has one family: `{}` or `{name}`, not both",
                        first.flag
                    ),
                ),
                None => def = Some((f, e.key.span())),
            }
        } else if name == "pair" || name == "triplet" {
            other_kind = Some((name, e.key.span()));
        } else {
            rest.push(e);
        }
    }
    let Some((def, _)) = def else {
        unreachable!("parse_family is called on entries with a family flag");
    };
    if let Some((name, span)) = other_kind {
        errs.spanned(
            span,
            format!(
                "a loss has one family: `{}` or `{name}`, not both",
                def.flag
            ),
        );
    }
    let names: Vec<&str> = def.keys.iter().map(|k| k.name).chain(["crate"]).collect();
    for Entry { key, value } in rest {
        let name = key.to_string();
        let span = key.span();
        if seen.contains(&name) {
            errs.spanned(span, format!("duplicate key `{name}`"));
            continue;
        }
        seen.push(name.clone());
        if name == "crate" {
            match value.as_ref().map(parse_path) {
                Some(Ok(p)) => krate = Some(p),
                _ => errs.spanned(
                    span,
                    "`crate` takes a path, such as `crate = ::metric_loss`",
                ),
            }
            continue;
        }
        let Some(k) = def.keys.iter().find(|k| k.name == name) else {
            let msg = if let Some(why) = classic_key_reason(def, &name) {
                why
            } else if !owners(&name).is_empty() {
                format!(
                    "`{name}` is a key of {}, not of a `{}` loss (its keys: {})",
                    owners(&name)
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    def.flag,
                    names.join(", ")
                )
            } else {
                format!(
                    "unknown key `{name}`{} (the keys of a `{}` loss are: {})",
                    did_you_mean(&name, &names),
                    def.flag,
                    names.join(", ")
                )
            };
            errs.spanned(span, msg);
            continue;
        };
        let Some(v) = value else {
            errs.spanned(
                span,
                format!("`{name}` needs a value: `{name} = {}`", k.default),
            );
            continue;
        };
        match parse_signed_number(&key, &v) {
            Err(e) => errs.push(e),
            Ok(x) => match check(k, x) {
                Ok(()) => given.push((k.name, x, span)),
                Err(msg) => errs.push(syn::Error::new_spanned(&v, msg)),
            },
        }
    }
    // cross-key rule: the lifted structure margins
    let value = |n: &str| {
        given
            .iter()
            .find(|g| g.0 == n)
            .map(|g| g.1)
            .or_else(|| def.keys.iter().find(|k| k.name == n).map(|k| k.default))
    };
    if let (Some(pm), Some(nm)) = (value("pos_margin"), value("neg_margin"))
        && def.keys.iter().any(|k| k.name == "neg_margin")
        && pm >= nm
    {
        let span = given
            .iter()
            .find(|g| g.0 == "pos_margin")
            .or_else(|| given.iter().find(|g| g.0 == "neg_margin"))
            .map_or_else(Span::call_site, |g| g.2);
        errs.spanned(
                span,
                format!(
                    "`pos_margin` ({pm}) must be smaller than `neg_margin` ({nm}): positive pairs would be allowed farther apart than negative ones must be"
                ),
            );
    }
    if let Some(e) = errs.0 {
        return Err(e);
    }
    Ok(FamilySpec {
        def,
        values: def
            .keys
            .iter()
            .map(|k| (k.name, value(k.name).unwrap_or(k.default)))
            .collect(),
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::metric_loss)),
    })
}

/// A value against its key's rule: the message if it breaks it.
fn check(k: &KeyDef, x: f32) -> Result<(), String> {
    let name = k.name;
    let ok = match k.rule {
        Rule::Positive => x > 0.0,
        Rule::NonNegative => x >= 0.0,
        Rule::Finite => true,
        Rule::BelowHalf => (0.0..0.5).contains(&x),
    };
    if ok {
        return Ok(());
    }
    let want = match k.rule {
        Rule::Positive => "> 0",
        Rule::NonNegative => ">= 0",
        Rule::Finite => "finite",
        Rule::BelowHalf => "in [0, 0.5)",
    };
    Err(format!("`{name}` must be {want} (got {x}): {}", k.why))
}
