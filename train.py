"""`python train.py method=X dataset=Y` from the repository root (same as `genclust-train`)."""

from genclust.train import main

if __name__ == "__main__":
    main()
