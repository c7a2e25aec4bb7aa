"""Network building blocks shared by the methods (DCGAN-style conv nets and MLPs)."""
