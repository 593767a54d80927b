//! `--augment PX`: the random translation of the training digits, and
//! `--validation`: the split that chooses recipes without the test digits.

/// An image whose pixel `(x, y)` is `1 + x + 28·y`: every pixel different
/// and none zero, so a misplaced or missing pixel shows.
fn numbered() -> Vec<f32> {
    (0..784).map(|i| 1.0 + i as f32).collect()
}

/// `dst[y][x] = src[y − dy][x − dx]`, 0 outside: written pixel by pixel.
fn naive_translate(src: &[f32], dx: isize, dy: isize) -> Vec<f32> {
    let mut out = vec![0.0; 784];
    for y in 0..28isize {
        for x in 0..28isize {
            let (sx, sy) = (x - dx, y - dy);
            if (0..28).contains(&sx) && (0..28).contains(&sy) {
                out[(y * 28 + x) as usize] = src[(sy * 28 + sx) as usize];
            }
        }
    }
    out
}

#[test]
fn translate_moves_pixels_and_fills_zeros() {
    let src = numbered();
    let mut dst = vec![f32::NAN; 784];
    // hand-checked: one right, two down
    common::translate(&src, 1, 2, &mut dst);
    assert_eq!(dst[0], 0.0, "the top-left corner came from outside");
    assert_eq!(dst[2 * 28 + 1], src[0], "(1, 2) holds the old (0, 0)");
    assert_eq!(dst[27 * 28 + 27], src[25 * 28 + 26]);
    assert!(
        dst[..2 * 28].iter().all(|&v| v == 0.0),
        "two empty rows on top"
    );
    assert!(
        (0..28).all(|y| dst[y * 28] == 0.0),
        "an empty column on the left"
    );
    // left and up
    common::translate(&src, -2, -1, &mut dst);
    assert_eq!(dst[0], src[28 + 2]);
    assert!((0..28).all(|y| dst[y * 28 + 26] == 0.0 && dst[y * 28 + 27] == 0.0));
    assert!(dst[27 * 28..].iter().all(|&v| v == 0.0));
}

#[test]
fn translate_agrees_with_the_naive_loop_for_every_shift() {
    let src = numbered();
    let mut dst = vec![0.0; 784];
    for dx in -29..=29 {
        for dy in -29..=29 {
            common::translate(&src, dx, dy, &mut dst);
            assert_eq!(dst, naive_translate(&src, dx, dy), "shift ({dx}, {dy})");
        }
    }
    common::translate(&src, 0, 0, &mut dst);
    assert_eq!(dst, src, "no shift: the image itself");
}

#[test]
fn shifts_stay_in_range_cover_it_and_repeat_for_a_seed() {
    let mut t = common::Translate::new(2, 0);
    let draws: Vec<_> = (0..2000).map(|_| t.draw()).collect();
    assert!(draws.iter().all(|&(dx, dy)| dx.abs() <= 2 && dy.abs() <= 2));
    for dx in -2..=2 {
        for dy in -2..=2 {
            assert!(draws.contains(&(dx, dy)), "({dx}, {dy}) never drawn");
        }
    }
    let mut again = common::Translate::new(2, 0);
    assert!(
        draws.iter().all(|&d| d == again.draw()),
        "seeded: the same shifts"
    );
    let mut other = common::Translate::new(2, 1);
    assert!(
        draws.iter().any(|&d| d != other.draw()),
        "another seed, other shifts"
    );
    assert_eq!(common::Translate::new(99, 0).max_shift(), 27);
}

#[test]
fn an_augmented_batch_is_each_digit_shifted_and_zero_is_the_plain_batch() {
    let args = common::Args::smoke(1);
    let mnist = common::load(&args).unwrap();
    let dev = common::device(0);
    let idx = [3, 1, 4, 1, 5, 9, 2, 6];
    let plain = common::batch_tensor(&dev, &mnist, &idx).as_vec();
    let none = common::Translate::new(0, 0)
        .batch(&dev, &mnist, &idx)
        .as_vec();
    assert_eq!(none, plain, "--augment 0 is the un-augmented batch");

    let mut t = common::Translate::new(2, 3);
    let shifted = t.batch(&dev, &mnist, &idx).as_vec();
    let mut replay = common::Translate::new(2, 3);
    let mut moved = 0;
    for (k, &i) in idx.iter().enumerate() {
        let (dx, dy) = replay.draw();
        let want = naive_translate(mnist.image(i).unwrap(), dx, dy);
        assert_eq!(&shifted[k * 784..(k + 1) * 784], &want[..], "digit {i}");
        moved += usize::from((dx, dy) != (0, 0));
    }
    assert!(moved > 0, "some digit moved");
}

/// `--augment` reaches the training loop: the same seed with and without it
/// trains to different losses, and twice with it to the same ones.
#[test]
fn training_with_augment_is_seeded_and_differs_from_without() {
    let plain = common::run_triplet(&common::Args::smoke(3)).unwrap();
    let aug = common::Args {
        augment: Some(2),
        ..common::Args::smoke(3)
    };
    assert_eq!((aug.augment(), common::Args::smoke(3).augment()), (2, 0));
    let a = common::run_triplet(&aug).unwrap();
    let b = common::run_triplet(&aug).unwrap();
    assert_eq!(a.training.losses, b.training.losses);
    assert_ne!(a.training.losses[1..], plain.training.losses[1..]);
}

/// `--validation`: 6,000 training digits, queries 6,000..8,000, and the
/// protocol's held-out digits not loaded at all.
#[test]
fn validation_split_holds_out_training_digits_only() {
    let args = common::Args {
        validation: true,
        ..common::Args::smoke(2)
    };
    assert_eq!(args.train_count(), common::VALIDATION_TRAIN);
    assert_eq!(common::Args::smoke(2).train_count(), common::TRAIN);
    let mnist = common::load(&args).unwrap();
    assert_eq!(mnist.len(), common::TRAIN);
    let s = common::run_triplet(&args).unwrap();
    assert_eq!(
        s.retrieval.queries,
        common::TRAIN - common::VALIDATION_TRAIN
    );
    assert!(common::search::run_search(&args).is_err());
}

/// A recipe's own augmentation fills only what the command line left unset.
#[test]
fn augmented_or_keeps_the_flags_given() {
    let base = common::Args::smoke(1);
    let a = base.augmented_or(2, 500);
    assert_eq!((a.augment, a.augment_steps), (Some(2), Some(500)));
    let given = common::Args {
        augment: Some(0),
        ..common::Args::smoke(1)
    };
    let b = given.augmented_or(2, 500);
    assert_eq!((b.augment, b.augment_steps), (Some(0), Some(500)));
    assert_eq!(common::SHIFTED_RECIPE, (2, 500));
}

/// `--augment-steps`: shifted digits only for the first steps, then the
/// untouched ones: with 0 steps the run is the un-augmented one exactly.
#[test]
fn augment_steps_ends_the_augmentation() {
    let plain = common::run_triplet(&common::Args::smoke(3)).unwrap();
    let none = common::Args {
        augment: Some(2),
        augment_steps: Some(0),
        ..common::Args::smoke(3)
    };
    assert_eq!(
        common::run_triplet(&none).unwrap().training.losses,
        plain.training.losses
    );
    let first = common::Args {
        augment: Some(2),
        augment_steps: Some(1),
        ..common::Args::smoke(3)
    };
    let f = common::run_triplet(&first).unwrap();
    assert_ne!(f.training.losses[1..], plain.training.losses[1..]);
}
