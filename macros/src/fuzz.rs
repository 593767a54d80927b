//! Property tests of the attribute parser, run as plain unit tests
//! (proc_macro2 falls back to its own implementation outside a macro):
//! `cargo test -p metric-loss-macros --lib`.

#[cfg(test)]
mod tests {
    use crate::family::{FAMILIES, Rule};
    use crate::spec::{
        Arity, Declared, Distance, KEYS, Reduction, did_you_mean, parse, parse_spec,
    };
    use proc_macro2::TokenStream;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use std::cell::Cell;

    /// Random sequences: this many cases.
    const RANDOM_CASES: u32 = 4_000;
    /// Valid specs: this many cases.
    const VALID_CASES: u32 = 2_000;

    fn tokens(src: &str) -> TokenStream {
        src.parse()
            .unwrap_or_else(|e| panic!("test input does not lex: {src:?}: {e}"))
    }

    fn messages(e: syn::Error) -> Vec<String> {
        e.into_iter().map(|m| m.to_string()).collect()
    }

    fn runner(cases: u32) -> TestRunner {
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        })
    }

    /// Words that each lex on their own: keys, misspellings, values, numbers,
    /// strings, punctuation, paths.
    const VOCAB: &[&str] = &[
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
        "marign",
        "triplett",
        "pari",
        "squard",
        "normalise",
        "posmargin",
        "reduce",
        "euclidean",
        "euclidian",
        "cosine",
        "manhattan",
        "dot",
        "mean",
        "sum",
        "none",
        "mean_nonzero",
        "avg",
        "self",
        "super",
        "Self",
        "true",
        "false",
        "r#pair",
        "r#margin",
        "=",
        "==",
        "=>",
        ",",
        ",",
        ",",
        ";",
        ":",
        "::",
        "-",
        "--",
        "+",
        ".",
        "..",
        "#",
        "!",
        "&",
        "*",
        "<",
        ">",
        "@",
        "?",
        "$",
        "'a",
        "_",
        "0",
        "1",
        "0.2",
        "-0.2",
        "-0",
        "-0.0",
        "1e40",
        "-1e40",
        "1e-40",
        "1.0e308",
        "1e309",
        "18446744073709551616",
        "340282366920938463463374607431768211455",
        "0x10",
        "1_000",
        "0.2f64",
        "1f32",
        "1u8",
        "1.5e3",
        "\"a\"",
        "\"\"",
        "\"0.2\"",
        "r\"raw\"",
        "b\"x\"",
        "'c'",
        "b'c'",
        "c\"s\"",
        "::metric_loss",
        "crate::a::b",
        "self::my_dist",
        "super::d",
        "a::b::c",
        "::x",
        "std::f32::consts::PI",
        "metric_loss::prelude",
    ];

    /// One token-ish piece: a vocabulary word, a random identifier, a number,
    /// a string literal.
    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => proptest::sample::select(VOCAB).prop_map(String::from),
            1 => "[a-z_][a-z0-9_]{0,10}".prop_filter("keyword", |s| {
                s != "_" && syn::parse_str::<syn::Ident>(s).is_ok()
            }),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
            1 => any::<i64>().prop_map(|i| i.to_string()),
            1 => any::<u128>().prop_map(|i| i.to_string()),
            1 => any::<String>().prop_map(|s| format!("{s:?}")),
        ]
    }

    /// Token sequences with nested `( )`, `[ ]` and `{ }` groups.
    fn sequence() -> impl Strategy<Value = String> {
        let leaf = prop::collection::vec(atom(), 0..12).prop_map(|v| v.join(" "));
        leaf.prop_recursive(3, 40, 6, |inner| {
            prop::collection::vec(
                prop_oneof![
                    3 => atom(),
                    1 => inner.clone().prop_map(|s| format!("({s})")),
                    1 => inner.clone().prop_map(|s| format!("[{s}]")),
                    1 => inner.prop_map(|s| format!("{{{s}}}")),
                ],
                0..10,
            )
            .prop_map(|v| v.join(" "))
        })
    }

    #[test]
    fn random_tokens_never_panic() {
        let ok = Cell::new(0usize);
        let err = Cell::new(0usize);
        runner(RANDOM_CASES)
            .run(&sequence(), |src| {
                let ts: TokenStream = src
                    .parse()
                    .map_err(|e| TestCaseError::fail(format!("does not lex: {src:?}: {e}")))?;
                match parse_spec(ts) {
                    Ok(_) => ok.set(ok.get() + 1),
                    Err(e) => {
                        let msgs = messages(e);
                        prop_assert!(!msgs.is_empty(), "no message for {:?}", src);
                        for m in &msgs {
                            prop_assert!(!m.trim().is_empty(), "empty message for {:?}", src);
                        }
                        err.set(err.get() + 1);
                    }
                }
                Ok(())
            })
            .unwrap();
        let total = ok.get() + err.get();
        eprintln!(
            "random token sequences: {total} cases ({} Ok, {} Err)",
            ok.get(),
            err.get()
        );
        assert!(total >= RANDOM_CASES as usize);
    }

    /// A valid spec as written, and what it must parse to.
    #[derive(Debug, Clone)]
    struct Valid {
        entries: Vec<String>,
        trailing_comma: bool,
        arity: Arity,
        distance: String,
        squared: bool,
        normalize: bool,
        swap: bool,
        soft: bool,
        margin: f32,
        pos_margin: f32,
        reduction: Reduction,
        krate: String,
    }

    fn hundredths(h: u32) -> String {
        format!("{}.{:02}", h / 100, h % 100)
    }

    fn valid() -> impl Strategy<Value = Valid> {
        let distances = proptest::sample::select(vec![
            None,
            Some("euclidean"),
            Some("cosine"),
            Some("manhattan"),
            Some("dot"),
            Some("self::my_dist"),
            Some("crate::a::b"),
            Some("::x::y"),
            Some("super::d"),
        ]);
        let reductions = proptest::sample::select(vec![
            None,
            Some(("mean", Reduction::Mean)),
            Some(("sum", Reduction::Sum)),
            Some(("none", Reduction::None)),
            Some(("mean_nonzero", Reduction::MeanNonzero)),
        ]);
        let krates = proptest::sample::select(vec![
            None,
            Some("::metric_loss"),
            Some("crate"),
            Some("crate::reexport::ml"),
            Some("metric_loss"),
        ]);
        (
            any::<bool>(),
            distances,
            any::<[bool; 4]>(),
            (0u32..100_000, any::<bool>(), any::<bool>()),
            (0u32..100_000, any::<bool>()),
            reductions,
            krates,
            any::<bool>(),
        )
            .prop_flat_map(
                |(
                    pair,
                    distance,
                    [squared, normalize, swap, soft],
                    margin,
                    pos,
                    reduction,
                    krate,
                    trailing,
                )| {
                    let arity = if pair { Arity::Pair } else { Arity::Triplet };
                    let mut entries = vec![if pair { "pair" } else { "triplet" }.to_string()];
                    if let Some(d) = distance {
                        entries.push(format!("distance = {d}"));
                    }
                    let squared = squared && distance != Some("dot");
                    let swap = swap && !pair;
                    let soft = soft && !pair;
                    for (on, k) in [
                        (squared, "squared"),
                        (normalize, "normalize"),
                        (swap, "swap"),
                        (soft, "soft"),
                    ] {
                        if on {
                            entries.push(k.into());
                        }
                    }
                    // margin: required unless a soft triplet loss; written as an
                    // integer when whole, half the time.
                    let (m_h, m_given, m_int) = margin;
                    let m_given = m_given || !soft;
                    let mut margin = 0.0;
                    let mut m_h_eff = 0;
                    if m_given {
                        let text = if m_int {
                            (m_h / 100).to_string()
                        } else {
                            hundredths(m_h)
                        };
                        let m_h2 = if m_int { m_h / 100 * 100 } else { m_h };
                        margin = text.parse::<f64>().unwrap() as f32;
                        m_h_eff = m_h2;
                        entries.push(format!("margin = {text}"));
                    }
                    // pos_margin: pair only, strictly below the margin.
                    let (p_h, p_given) = pos;
                    let mut pos_margin = 0.0;
                    if pair && p_given && m_h_eff > 0 {
                        let text = hundredths(p_h % m_h_eff);
                        pos_margin = text.parse::<f64>().unwrap() as f32;
                        entries.push(format!("pos_margin = {text}"));
                    }
                    let reduction = match reduction {
                        Some((word, r)) => {
                            entries.push(format!("reduction = {word}"));
                            r
                        }
                        None => Reduction::Mean,
                    };
                    if let Some(k) = krate {
                        entries.push(format!("crate = {k}"));
                    }
                    let v = Valid {
                        entries: Vec::new(),
                        trailing_comma: trailing,
                        arity,
                        distance: distance.unwrap_or("euclidean").into(),
                        squared,
                        normalize,
                        swap,
                        soft,
                        margin,
                        pos_margin,
                        reduction,
                        krate: krate.unwrap_or("::metric_loss").into(),
                    };
                    Just(entries).prop_shuffle().prop_map(move |entries| Valid {
                        entries,
                        ..v.clone()
                    })
                },
            )
    }

    fn path_text(p: &syn::Path) -> String {
        quote::quote!(#p).to_string().replace(' ', "")
    }

    #[test]
    fn valid_specs_parse_to_their_fields() {
        let count = Cell::new(0usize);
        runner(VALID_CASES)
            .run(&valid(), |v| {
                let mut src = v.entries.join(", ");
                if v.trailing_comma {
                    src.push(',');
                }
                let spec = match parse_spec(tokens(&src)) {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "{src:?} rejected: {:?}",
                            messages(e)
                        )));
                    }
                };
                prop_assert_eq!(spec.arity, v.arity, "{}", src);
                prop_assert_eq!(spec.distance.name(), v.distance.clone(), "{}", src);
                let builtin = Distance::BUILTIN.contains(&v.distance.as_str());
                prop_assert_eq!(
                    matches!(spec.distance, Distance::Custom(_)),
                    !builtin,
                    "{}",
                    src
                );
                prop_assert_eq!(spec.squared, v.squared, "{}", src);
                prop_assert_eq!(spec.normalize, v.normalize, "{}", src);
                prop_assert_eq!(spec.swap, v.swap, "{}", src);
                prop_assert_eq!(spec.soft, v.soft, "{}", src);
                prop_assert_eq!(spec.margin, v.margin, "{}", src);
                prop_assert_eq!(spec.pos_margin, v.pos_margin, "{}", src);
                prop_assert_eq!(spec.reduction, v.reduction, "{}", src);
                prop_assert_eq!(path_text(&spec.krate), v.krate.clone(), "{}", src);
                count.set(count.get() + 1);
                Ok(())
            })
            .unwrap();
        eprintln!("valid specs: {} cases", count.get());
        assert!(count.get() >= VALID_CASES as usize);
    }

    #[test]
    fn did_you_mean_suggests_close_words_only() {
        assert_eq!(did_you_mean("marign", &KEYS), "; did you mean `margin`?");
        assert_eq!(did_you_mean("triplett", &KEYS), "; did you mean `triplet`?");
        assert_eq!(did_you_mean("pari", &KEYS), "; did you mean `pair`?");
        assert_eq!(
            did_you_mean("normalise", &KEYS),
            "; did you mean `normalize`?"
        );
        assert_eq!(
            did_you_mean("euclidian", &Distance::BUILTIN),
            "; did you mean `euclidean`?"
        );
        assert_eq!(
            did_you_mean("manhatan", &Distance::BUILTIN),
            "; did you mean `manhattan`?"
        );
        assert_eq!(
            did_you_mean("cosin", &Distance::BUILTIN),
            "; did you mean `cosine`?"
        );
        // Far from everything: no guess.
        assert_eq!(did_you_mean("foo", &Distance::BUILTIN), "");
        assert_eq!(did_you_mean("learning_rate", &KEYS), "");
        assert_eq!(
            did_you_mean("avg", &["mean", "sum", "none", "mean_nonzero"]),
            ""
        );
    }

    fn errors_of(src: &str) -> Vec<String> {
        match parse_spec(tokens(src)) {
            Ok(_) => panic!("{src:?} was accepted"),
            Err(e) => messages(e),
        }
    }

    #[test]
    fn unknown_key_message_suggests_and_lists() {
        let msgs = errors_of("triplet, marign = 0.2");
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("unknown key `marign`"), "{msgs:?}");
        assert!(msgs[0].contains("did you mean `margin`?"), "{msgs:?}");
        assert!(msgs[0].contains("pos_margin"), "{msgs:?}");
    }

    #[test]
    fn two_mistakes_give_two_errors() {
        let msgs = errors_of("pair, swap, margin = -1.0");
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("must be >= 0")), "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.contains("`swap` applies to triplet losses only")),
            "{msgs:?}"
        );

        let msgs =
            errors_of("triplet, distance = euclidian, reduction = avg, squared = yes, margin = 1");
        assert_eq!(msgs.len(), 3, "{msgs:?}");
    }

    #[test]
    fn an_invalid_key_is_not_also_reported_missing() {
        // The margin is there, only unreadable: one error, not "needs a margin" too.
        assert_eq!(errors_of("triplet, margin = \"a\"").len(), 1);
        assert_eq!(errors_of("pair, margin = abc").len(), 1);
        // A misspelt arity: one error, with the suggestion.
        let msgs = errors_of("triplett, margin = 0.2");
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("did you mean `triplet`?"), "{msgs:?}");
    }

    #[test]
    fn numbers_at_the_edges() {
        assert!(parse_spec(tokens("triplet, margin = -0.0")).is_ok());
        assert!(parse_spec(tokens("triplet, margin = 18446744073709551616")).is_ok());
        let msgs = errors_of("triplet, margin = 1e40");
        assert!(msgs[0].contains("finite"), "{msgs:?}");
        let msgs = errors_of("triplet, margin = 1000000000000000000000000000000000000000000");
        assert!(msgs[0].contains("finite"), "{msgs:?}");
        let msgs = errors_of("pair, margin = 1, pos_margin = 1.0");
        assert!(
            msgs[0].contains("must be smaller than `margin`"),
            "{msgs:?}"
        );
    }

    /// Words of the ranking family's specs, with misspellings and values.
    const FAMILY_VOCAB: &[&str] = &[
        "multi_similarity",
        "ntxent",
        "supcon",
        "circle",
        "lifted_structure",
        "generalized_lifted_structure",
        "npairs",
        "margin_loss",
        "alpha",
        "beta",
        "base",
        "temperature",
        "temprature",
        "m",
        "gamma",
        "neg_margin",
        "pos_margin",
        "nu",
        "margin",
        "pair",
        "triplet",
        "distance",
        "reduction",
        "cosine",
        "crate",
        "::metric_loss",
        "=",
        "=",
        ",",
        ",",
        "0",
        "0.1",
        "-0.1",
        "2",
        "1e40",
        "\"x\"",
    ];

    #[test]
    fn random_family_tokens_never_panic() {
        let words = prop::collection::vec(proptest::sample::select(FAMILY_VOCAB), 0..12)
            .prop_map(|v| v.join(" "));
        let (ok, err) = (Cell::new(0usize), Cell::new(0usize));
        runner(RANDOM_CASES)
            .run(&words, |src| {
                match parse(tokens(&src)) {
                    Ok(_) => ok.set(ok.get() + 1),
                    Err(e) => {
                        let msgs = messages(e);
                        prop_assert!(!msgs.is_empty(), "no message for {:?}", src);
                        prop_assert!(msgs.iter().all(|m| !m.trim().is_empty()), "{:?}", src);
                        err.set(err.get() + 1);
                    }
                }
                Ok(())
            })
            .unwrap();
        eprintln!("family token sequences: {} Ok, {} Err", ok.get(), err.get());
        assert!(ok.get() > 0 && err.get() > 0);
    }

    #[test]
    fn valid_family_specs_parse_to_their_values() {
        // (family index, for each key: whether it is written and a uniform draw)
        let strategy = (
            0..FAMILIES.len(),
            prop::collection::vec((any::<bool>(), 0.0f64..1.0), 3),
        );
        runner(VALID_CASES)
            .run(&strategy, |(fi, draws)| {
                let def = &FAMILIES[fi];
                let mut src = def.flag.to_string();
                let mut want = Vec::new();
                for (k, &(write, u)) in def.keys.iter().zip(&draws) {
                    let mut v = match k.rule {
                        Rule::Positive => 1e-3 + 100.0 * u,
                        Rule::NonNegative => 100.0 * u,
                        Rule::Finite => 200.0 * u - 100.0,
                        Rule::BelowHalf => 0.49 * u,
                    } as f32;
                    if k.name == "pos_margin" {
                        v = v.min(0.5); // below any neg_margin written (>= 1 then)
                    }
                    if k.name == "neg_margin" {
                        v += 1.0;
                    }
                    let v = if write { v } else { k.default };
                    if write {
                        src.push_str(&format!(", {} = {v:?}", k.name));
                    }
                    want.push((k.name, v));
                }
                let spec = match parse(tokens(&src)) {
                    Ok(Declared::Family(s)) => s,
                    Ok(Declared::Classic(_)) => {
                        return Err(TestCaseError::fail(format!("classic: {src}")));
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{src}: {:?}", messages(e)))),
                };
                prop_assert_eq!(spec.def.flag, def.flag);
                prop_assert_eq!(spec.values, want, "{}", src);
                Ok(())
            })
            .unwrap();
    }
}
