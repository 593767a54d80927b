//! Parse and validate: attribute tokens -> a plain [`Spec`] value, or every
//! problem found, each as a `syn::Error` spanned on the offending token.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Ident, Token};

use crate::family::{self, FamilySpec};

/// `pair` or `triplet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Pair,
    Triplet,
}

/// The distance key.
#[derive(Clone)]
pub enum Distance {
    Euclidean,
    Cosine,
    Manhattan,
    Dot,
    /// A path to the user's own row-wise distance function.
    Custom(syn::Path),
}

impl Distance {
    pub const BUILTIN: [&'static str; 4] = ["euclidean", "cosine", "manhattan", "dot"];

    pub fn name(&self) -> String {
        match self {
            Distance::Euclidean => "euclidean".into(),
            Distance::Cosine => "cosine".into(),
            Distance::Manhattan => "manhattan".into(),
            Distance::Dot => "dot".into(),
            Distance::Custom(p) => quote::quote!(#p).to_string().replace(' ', ""),
        }
    }
}

/// The reduction key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Sum,
    None,
    MeanNonzero,
}

/// A valid loss declaration, with nothing left to check.
#[derive(Clone)]
pub struct Spec {
    pub arity: Arity,
    pub distance: Distance,
    pub squared: bool,
    pub normalize: bool,
    pub swap: bool,
    pub soft: bool,
    pub margin: f32,
    pub pos_margin: f32,
    pub reduction: Reduction,
    /// The path generated code uses to reach the library (`::metric_loss`).
    pub krate: syn::Path,
}

/// Every key the attribute knows, for the unknown-key message.
pub const KEYS: [&str; 11] = [
    "pair",
    "triplet",
    "distance",
    "squared",
    "margin",
    "pos_margin",
    "swap",
    "soft",
    "normalize",
    "reduction",
    "crate",
];

const FLAGS: [&str; 6] = ["pair", "triplet", "squared", "normalize", "swap", "soft"];
const VALUED: [&str; 5] = ["distance", "margin", "pos_margin", "reduction", "crate"];
const REDUCTIONS: [&str; 4] = ["mean", "sum", "none", "mean_nonzero"];

/// One `key` or `key = value` entry, as written.
pub(crate) struct Entry {
    pub key: Ident,
    pub value: Option<TokenStream>,
}

fn parse_entries(input: ParseStream) -> syn::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    while !input.is_empty() {
        let key = if input.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            Ident::new("crate", kw.span)
        } else if input.peek(Ident::peek_any) {
            Ident::parse_any(input)?
        } else {
            let tt: TokenTree = input.parse()?;
            return Err(syn::Error::new(
                tt.span(),
                "expected a key such as `triplet`, `distance = euclidean` or `margin = 0.2`",
            ));
        };
        let value = if input.peek(Token![=]) {
            let eq: Token![=] = input.parse()?;
            let mut value = TokenStream::new();
            while !input.is_empty() && !input.peek(Token![,]) {
                let tt: TokenTree = input.parse()?;
                value.extend([tt]);
            }
            if value.is_empty() {
                return Err(syn::Error::new(eq.span, format!("`{key} =` needs a value")));
            }
            Some(value)
        } else {
            None
        };
        entries.push(Entry { key, value });
        if input.is_empty() {
            break;
        }
        let _: Token![,] = input.parse()?;
    }
    Ok(entries)
}

/// Edit distance counting an adjacent transposition as one edit (optimal
/// string alignment), for did-you-mean suggestions: `marign` is 1 from `margin`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate, if close enough: one edit per three letters, at
/// least one (so `foo` does not suggest `dot`).
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 1.max(c.chars().count() / 3))
        .min()
        .map(|(_, c)| c)
}

/// `"; did you mean `x`?"`, or nothing when no candidate is close.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// A number written as a literal, possibly negated, that must be `>= 0`.
fn parse_number(key: &Ident, tokens: &TokenStream) -> syn::Result<f32> {
    let value = parse_signed_number(key, tokens)?;
    if value < 0.0 {
        return Err(syn::Error::new_spanned(
            tokens,
            format!("`{key}` must be >= 0 (got {value}): a negative margin asks for nothing"),
        ));
    }
    Ok(value)
}

/// A number written as a literal, possibly negated: `0.2`, `1`, `-1.0`.
pub(crate) fn parse_signed_number(key: &Ident, tokens: &TokenStream) -> syn::Result<f32> {
    let expr: syn::Expr = syn::parse2(tokens.clone()).map_err(|_| {
        syn::Error::new_spanned(
            tokens,
            format!("`{key}` must be a number, such as `{key} = 0.2`"),
        )
    })?;
    let (negative, lit) = match &expr {
        syn::Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            expr,
            ..
        }) => (true, &**expr),
        other => (false, other),
    };
    let value: f64 = match lit {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Float(f),
            ..
        }) => f.base10_parse()?,
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => i.base10_digits().parse::<f64>().map_err(|_| {
            syn::Error::new_spanned(
                tokens,
                format!("`{key}` must be a number, such as `{key} = 0.2`"),
            )
        })?,
        _ => {
            return Err(syn::Error::new_spanned(
                tokens,
                format!("`{key}` must be a number, such as `{key} = 0.2`"),
            ));
        }
    };
    let value = if negative { -value } else { value };
    let value = value as f32;
    if !value.is_finite() {
        return Err(syn::Error::new_spanned(
            tokens,
            format!("`{key}` must be a finite f32"),
        ));
    }
    Ok(value)
}

pub(crate) fn parse_path(tokens: &TokenStream) -> syn::Result<syn::Path> {
    Parser::parse2(
        |input: ParseStream| {
            let path = if input.peek(Token![crate]) && !input.peek2(Token![::]) {
                let kw: Token![crate] = input.parse()?;
                syn::Path::from(Ident::new("crate", kw.span))
            } else {
                syn::Path::parse_mod_style(input)?
            };
            if !input.is_empty() {
                return Err(input.error("unexpected tokens after the path"));
            }
            Ok(path)
        },
        tokens.clone(),
    )
}

/// Collects errors, serde_derive's `Ctxt` style.
#[derive(Default)]
pub(crate) struct Errors(pub Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    pub(crate) fn spanned(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }
}

/// What an attribute declares: a pair or triplet loss, or a loss of the
/// ranking family.
pub enum Declared {
    Classic(Spec),
    Family(FamilySpec),
}

/// Parses and validates the attribute's arguments into either kind. Never
/// panics: every input gives a declaration or spanned errors (all of them).
pub fn parse(args: TokenStream) -> Result<Declared, syn::Error> {
    let entries = Parser::parse2(parse_entries, args)?;
    if entries
        .iter()
        .any(|e| family::family(&e.key.to_string()).is_some())
    {
        family::parse_family(entries).map(Declared::Family)
    } else {
        classic(entries).map(Declared::Classic)
    }
}

/// Parses and validates the arguments of a pair or triplet loss (what the
/// property tests exercise). Never panics: every input gives either a
/// [`Spec`] or spanned errors (all of them, combined).
#[cfg(test)]
pub fn parse_spec(args: TokenStream) -> Result<Spec, syn::Error> {
    classic(Parser::parse2(parse_entries, args)?)
}

fn classic(entries: Vec<Entry>) -> Result<Spec, syn::Error> {
    let mut errs = Errors::default();

    let mut seen: Vec<(String, Span)> = Vec::new();
    let mut arity: Option<(Arity, Span)> = None;
    let mut distance: Option<(Distance, Span)> = None;
    let mut flags: std::collections::HashMap<&'static str, Span> = Default::default();
    let mut margin: Option<(f32, Span)> = None;
    let mut pos_margin: Option<(f32, Span)> = None;
    let mut reduction = Reduction::Mean;
    let mut krate: Option<syn::Path> = None;
    // Keys written but unusable (bad value, or an unknown key close to them):
    // their own error says enough, so they are not also reported missing.
    let mut attempted: Vec<&'static str> = Vec::new();

    for Entry { key, value } in entries {
        let name = key.to_string();
        let span = key.span();
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == name) {
            let _ = first;
            errs.spanned(span, format!("duplicate key `{name}`"));
            continue;
        }
        seen.push((name.clone(), span));
        let is_flag = FLAGS.contains(&name.as_str());
        let is_valued = VALUED.contains(&name.as_str());
        if !is_flag && !is_valued {
            attempted.extend(closest(&name, &KEYS));
            let owners = family::owners(&name);
            let msg = if owners.is_empty() {
                let mut candidates = KEYS.to_vec();
                candidates.extend(family::flags());
                format!(
                    "unknown key `{name}`{} (the keys are: {})",
                    did_you_mean(&name, &candidates),
                    KEYS.join(", ")
                )
            } else {
                format!(
                    "`{name}` is a key of {}, not of a pair or triplet loss",
                    owners
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
            };
            errs.spanned(span, msg);
            continue;
        }
        if is_flag && let Some(v) = &value {
            errs.push(syn::Error::new_spanned(
                v,
                format!("`{name}` is a flag and takes no value: write `{name}` alone"),
            ));
            continue;
        }
        match (name.as_str(), value) {
            ("pair" | "triplet", None) => {
                let a = if name == "pair" { Arity::Pair } else { Arity::Triplet };
                if arity.is_some() {
                    errs.spanned(span, "a loss is either `pair` or `triplet`, not both");
                } else {
                    arity = Some((a, span));
                }
            }
            ("squared" | "normalize" | "swap" | "soft", None) => {
                let k = FLAGS.iter().find(|f| **f == name).copied().unwrap_or("squared");
                flags.insert(k, span);
            }
            (_, None) => errs.spanned(span, format!("`{name}` needs a value: `{name} = ...`")),
            ("distance", Some(v)) => match parse_path(&v) {
                Ok(path) => {
                    let d = match path.get_ident().map(|i| i.to_string()) {
                        Some(id) if id == "euclidean" => Some(Distance::Euclidean),
                        Some(id) if id == "cosine" => Some(Distance::Cosine),
                        Some(id) if id == "manhattan" => Some(Distance::Manhattan),
                        Some(id) if id == "dot" => Some(Distance::Dot),
                        Some(id) => {
                            let hint = match closest(&id, &Distance::BUILTIN) {
                                Some(_) => String::new(),
                                None => format!(", such as `self::{id}`"),
                            };
                            errs.spanned(
                                path.span(),
                                format!(
                                    "unknown distance `{id}`{} (the distances are euclidean, cosine, manhattan, dot, \
                                     or a path with `::` to your own function{hint})",
                                    did_you_mean(&id, &Distance::BUILTIN)
                                ),
                            );
                            None
                        }
                        None => Some(Distance::Custom(path.clone())),
                    };
                    if let Some(d) = d {
                        distance = Some((d, path.span()));
                    }
                }
                Err(_) => errs.push(syn::Error::new_spanned(
                    &v,
                    "expected a distance: euclidean, cosine, manhattan, dot, or a path to a function",
                )),
            },
            ("margin", Some(v)) => match parse_number(&key, &v) {
                Ok(m) => margin = Some((m, span)),
                Err(e) => {
                    attempted.push("margin");
                    errs.push(e)
                }
            },
            ("pos_margin", Some(v)) => match parse_number(&key, &v) {
                Ok(m) => pos_margin = Some((m, span)),
                Err(e) => errs.push(e),
            },
            ("reduction", Some(v)) => {
                let word = parse_path(&v).ok().and_then(|p| p.get_ident().map(|i| i.to_string()));
                match word.as_deref() {
                    Some("mean") => reduction = Reduction::Mean,
                    Some("sum") => reduction = Reduction::Sum,
                    Some("none") => reduction = Reduction::None,
                    Some("mean_nonzero") => reduction = Reduction::MeanNonzero,
                    other => errs.push(syn::Error::new_spanned(
                        &v,
                        format!(
                            "unknown reduction{}; expected one of: {}",
                            other.map(|o| format!(" `{o}`{}", did_you_mean(o, &REDUCTIONS))).unwrap_or_default(),
                            REDUCTIONS.join(", ")
                        ),
                    )),
                }
            }
            ("crate", Some(v)) => match parse_path(&v) {
                Ok(p) => krate = Some(p),
                Err(e) => errs.push(syn::Error::new(e.span(), "`crate` takes a path, such as `crate = ::metric_loss`")),
            },
            (_, Some(_)) => unreachable_key(&mut errs, span, &name),
        }
    }

    // Cross-key rules.
    let arity_span = arity.map_or_else(Span::call_site, |(_, s)| s);
    let arity = match arity {
        Some((a, _)) => Some(a),
        None => {
            if !attempted.contains(&"pair") && !attempted.contains(&"triplet") {
                errs.spanned(
                    Span::call_site(),
                    format!(
                        "a loss needs its kind: add `pair` (contrastive), `triplet`, or one of the ranking family ({})",
                        family::flags().iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            None
        }
    };
    let (distance, distance_span) = distance.unwrap_or((Distance::Euclidean, Span::call_site()));
    let has = |k: &str| flags.get(k).copied();
    if let Some(arity) = arity {
        if arity == Arity::Pair {
            for k in ["swap", "soft"] {
                if let Some(s) = has(k) {
                    errs.spanned(
                        s,
                        format!("`{k}` applies to triplet losses only, not to a `pair` loss"),
                    );
                }
            }
        }
        if arity == Arity::Triplet
            && let Some((_, s)) = pos_margin
        {
            errs.spanned(
                s,
                "`pos_margin` applies to pair losses only, not to a `triplet` loss",
            );
        }
        let margin_required = !(arity == Arity::Triplet && has("soft").is_some());
        if margin_required && margin.is_none() && !attempted.contains(&"margin") {
            errs.spanned(
                arity_span,
                match arity {
                    Arity::Pair => "a `pair` loss needs `margin = <number>`: how far apart dissimilar pairs must be",
                    Arity::Triplet => {
                        "a `triplet` loss needs `margin = <number>` (only `soft` makes it optional)"
                    }
                },
            );
        }
        if let (Arity::Pair, Some((pm, s)), Some((m, _))) = (arity, pos_margin, margin)
            && pm >= m
        {
            errs.spanned(
                    s,
                    format!("`pos_margin` ({pm}) must be smaller than `margin` ({m}): similar pairs would be allowed farther apart than dissimilar ones must be"),
                );
        }
    }
    if let (Distance::Dot, Some(s)) = (&distance, has("squared")) {
        let _ = distance_span;
        errs.spanned(
            s,
            "`squared` does not apply to `distance = dot`: the negative inner product can be negative, and squaring it loses the order",
        );
    }

    if let Some(e) = errs.0 {
        return Err(e);
    }
    let arity = arity.unwrap_or(Arity::Triplet);
    Ok(Spec {
        arity,
        distance,
        squared: has("squared").is_some(),
        normalize: has("normalize").is_some(),
        swap: has("swap").is_some(),
        soft: has("soft").is_some(),
        margin: margin.map(|(m, _)| m).unwrap_or(0.0),
        pos_margin: pos_margin.map(|(m, _)| m).unwrap_or(0.0),
        reduction,
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::metric_loss)),
    })
}

fn unreachable_key(errs: &mut Errors, span: Span, name: &str) {
    errs.spanned(span, format!("`{name}` takes no value"));
}

/// Checks the item: a unit struct without generics.
pub fn check_item(item: &syn::Item) -> Result<&syn::ItemStruct, syn::Error> {
    const WHAT: &str = "#[metric_loss] goes on a unit struct, such as `pub struct MyLoss;`";
    match item {
        syn::Item::Struct(s) => {
            let mut errs = Errors::default();
            if !s.generics.params.is_empty() || s.generics.where_clause.is_some() {
                errs.push(syn::Error::new_spanned(
                    &s.generics,
                    "#[metric_loss] structs cannot be generic: the spec fixes everything the loss needs",
                ));
            }
            if !matches!(s.fields, syn::Fields::Unit) {
                errs.push(syn::Error::new_spanned(
                    &s.fields,
                    format!("{WHAT}; the loss keeps no fields (its margin can be changed at run time with `with_margin`)"),
                ));
            }
            match errs.0 {
                Some(e) => Err(e),
                None => Ok(s),
            }
        }
        syn::Item::Enum(e) => Err(syn::Error::new_spanned(
            e.enum_token,
            format!("{WHAT}, not an enum"),
        )),
        syn::Item::Fn(f) => Err(syn::Error::new_spanned(
            f.sig.fn_token,
            format!("{WHAT}, not a function"),
        )),
        other => Err(syn::Error::new_spanned(other, WHAT)),
    }
}
