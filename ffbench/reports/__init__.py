"""ffbench's report kinds, each a plugin like a method.

A kind is a small module: a ``ReportKind`` subclass with a ``title``, optionally an HTML ``template``
(a ``string.Template`` with $title, $subtitle, $toc, $body, $generated), ``applicable(ctx)`` (why there is
nothing to show, or None) and ``build(ctx) -> list[Section]`` (the statistics and figures it shows),
registered with ``@report_kind(name, summary)`` from ``ffbench.analysis.report``. Declare the module in your
package's ``pyproject.toml`` and it is found without any import by name::

    [project.entry-points."ffbench.reports"]
    mykind = "mypackage.mykind"

``ffbench report SUITE --kind mykind`` then builds it (``--list-kinds`` lists them). ``ctx`` gives the
tidy evaluation table (``ctx.frame``, with a 'task' label column), the tuning table, the factors and axes,
the options (metric, control, ROPE, alpha, resamples, seed) and cached shared statistics
(``ctx.cells()``, ``ctx.comparisons()``); the statistics come from ``ffbench.stats`` and the figures from
``ffbench.analysis.figures``; ``Section`` and the ``fmt_*`` helpers come from ``ffbench.analysis.document``, and
``ReportContext`` from ``ffbench.analysis.report_context``. ``ffbench list reports`` lists the registered kinds.
"""
