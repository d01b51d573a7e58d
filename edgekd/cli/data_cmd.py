"""`edgekd data`: describe a data set, or write a built-in one out as .npz."""

import click

from .base import emit, json_option, load_data, main


@main.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also write it as an .npz (x_train, y_train, x_test, y_test).")
@click.option("--train-samples", type=click.IntRange(min=1), metavar="N",
              help="Keep only the first N training samples (a small slice of a large set).")
@click.option("--test-samples", type=click.IntRange(min=1), metavar="N",
              help="Keep only the first N test samples.")
@json_option
def data(name, output, train_samples, test_samples, as_json):
    """Describe data set NAME (a built-in: digits, iris, sensor, fashion-mnist; or an .npz path).

    fashion-mnist is read from the IDX files of Debian's dataset-fashion-mnist package;
    `edgekd data fashion-mnist --train-samples 6000 -o F.npz` writes a slice of it."""
    from ..data import class_counts, save_dataset
    ds = load_data(name)
    if train_samples or test_samples:
        ds = ds.head(train_samples, test_samples)
    if output:
        save_dataset(output, ds)
    res = {"name": ds.name, "input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
           "train": len(ds.y_train), "test": len(ds.y_test),
           "train_class_counts": class_counts(ds.y_train, ds.num_classes).tolist(),
           "output": output}
    emit(res, as_json, lambda r: f"{r['name']}: {r['train']} train / {r['test']} test samples "
                                 f"of shape {r['input_shape']}, {r['num_classes']} classes"
                                 + (f" -> {output}" if output else ""))
