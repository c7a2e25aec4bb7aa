"""`python predict.py RUN_DIR --dataset NAME` (same as `genclust-predict`)."""

from genclust.predict import main

if __name__ == "__main__":
    main()
