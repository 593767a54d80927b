//! Miners: which pairs and triplets of a batch are worth a gradient.
