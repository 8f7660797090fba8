"""Figures written into run folders."""
import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def learning_curves(history, path):
    """Loss and accuracy per epoch, train and validation, side by side."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for split, style in (("train", "o-"), ("val", "s--")):
        if any(row.get(f"{split}_loss") is not None for row in history):
            loss_axes.plot(epochs, [row.get(f"{split}_loss") for row in history], style, label=split)
            accuracy_axes.plot(epochs, [row.get(f"{split}_accuracy") for row in history], style, label=split)
    loss_axes.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.set(title="accuracy", xlabel="epoch", ylabel="top-1", ylim=(0, 1))
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
