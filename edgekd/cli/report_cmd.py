"""`edgekd report`: what a training run did, from its metrics.jsonl."""

import os

import click

from .base import emit, json_option, main


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also draw the run as a PNG here (needs matplotlib: edgekd[plot]).")
@json_option
def report(run_dir, output, as_json):
    """Per-epoch table of a run written by `edgekd train --out RUN_DIR`.

    Columns: samples visited, settled fraction, bytes the link carried so far (down + up)
    against naive float32 streaming for as many epochs and their ratio, train loss and test
    accuracy. With -o, also a PNG of the same: link bytes vs naive, settled fraction, samples
    per epoch, loss and accuracy.
    """
    from ..report import jsonable, load_metrics, plot, summary, summary_text, text_table
    rows = load_metrics(run_dir)
    written = plot(rows, output, title=os.path.normpath(run_dir)) if output else None
    result = {"epochs": rows, "summary": summary(rows), "plot": written}
    emit(jsonable(result), as_json,
         lambda r: "\n".join([text_table(rows), "", summary_text(r["summary"])]
                             + ([f"plot -> {written}"] if written else [])))
