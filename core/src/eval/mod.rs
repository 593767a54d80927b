//! Evaluation: retrieval metrics (P@1, R-Precision, MAP@R, Recall@K) and
//! verification metrics (ROC AUC, EER, TAR@FAR, 10-fold accuracy).
