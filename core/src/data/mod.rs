//! Data sets on disk: the IDX format of MNIST and Fashion-MNIST.
