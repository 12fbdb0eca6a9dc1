"""The Markdown of a :mod:`benchmarks.gpu_check` report: one table per section, or its error / skip line."""

from __future__ import annotations

from benchmarks.harness import table


def _s(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ratio(r: dict | None) -> str:
    return "n/a" if not r else f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"


def _engines(s: dict) -> str:
    rows = [[r["model"], r["variant"], r["particles"], r["engine"], r["samples"], _s(r["seconds_per_epoch"]),
             _s(r["seconds_per_epoch_50k"], 2), _s(r["plain_seconds_per_epoch"]), _ratio(r["ratio_vs_plain"]),
             _ratio(r["ratio_vs_n_plain"]), _ratio(r["ratio_vs_one"]), _ratio(r["ratio_vs_fp32"]),
             _s(r["peak_gpu_mib"], 0), r["auto_picks"], r["fastest"]]
            if "status" not in r else [r["model"], r["variant"], r["particles"], r["engine"]] + ["-"] * 9 +
            [r["status"], "-"] for r in s["rows"]]
    text = table(["model", "variant", "N", "engine", "samples", "s/epoch", "s/epoch at 50k", "plain s/epoch",
                  "vs plain (one model)", "vs N x plain", "vs N = 1", "vs fp32", "peak GPU MiB", "auto picks",
                  "fastest"], rows)
    notes = "".join(f"\n\n{model}: **{err}**" if err.startswith("skipped") else f"\n\n{model}: **error** {err}"
                    for model, err in s.get("errors", {}).items())
    return (f"One cycle of {s['epochs_per_call']} epoch (SWA, BN recalibration, resume files) per call, batch "
            f"{s['batch_size']}; ratios: median of per-round ratios [min-max].\n\n{text}{notes}")


def _swa(s: dict) -> str:
    t = s["seconds_per_epoch"]
    rows = [[s["model"], s["samples"], s["epochs"], _s(t["plain"]), _s(t["masked SWA"]),
             _ratio(s["masked_swa_vs_plain"]), f"<= {s['target']:.2f}x"]]
    return table(["model", "samples", "epochs", "plain masked SWA s/epoch", "SWAMP masked SWA s/epoch",
                  "SWAMP / plain", "target"], rows) + f"\n\n{s['rounds']} paired rounds."


def _hessian(s: dict) -> str:
    rows = [[f"{100 * r['target_rse']:g}%", _s(r["pyhessian_seconds"]) + ("*" if r["pyhessian_projected"] else ""),
             f"{r['pyhessian_probes']:.0f}", _s(r["ours_seconds"]), f"{r['ours_products']:.0f}", _ratio(r["ratio"]),
             f"{r['estimates'][0]:.4g} / {r['estimates'][1]:.4g} ({_s(r['gap_in_stderrs'], 1)} se)",
             f"<= {s['target']:.2f}x"] for r in s["rows"]]
    return (f"{s['model']}, {s['samples']} training samples in batches of "
            f"{s['batch_size']}, {s['rounds']} paired rounds; * = PyHessian stopped early, time projected.\n\n"
            + table(["target RSE", "PyHessian s", "PyHessian probes", "ours (Hutch++) s", "ours products",
                     "ours / PyHessian", "trace: PyHessian / ours (gap)", "target"], rows))


def _scans(s: dict) -> str:
    t = s["seconds_per_scan"]
    rows = [[s["points"], _s(t["ours"]), _s(t.get("ours, modules")), _s(t["loss-landscapes"]), _s(t["stacked"]),
             _ratio(s["ours_vs_loss_landscapes"]), _ratio(s.get("modules_vs_loss_landscapes")),
             _ratio(s["stacked_vs_ours"]), f"<= {s['target']:.1f}x"]]
    return (table(["K", "ours s", "ours on modules s", "loss-landscapes s", "stacked s", "ours / loss-landscapes",
                   "on modules / loss-landscapes", "stacked / ours", "target"], rows)
            + f"\n\n{s['rounds']} paired rounds; stacked is {s['stacked_is']}.")


RENDER = {"engines": ("Engines: time per epoch and peak GPU memory", _engines),
          "swa_step": ("SWAMP's masked SWA step vs the plain loop", _swa),
          "hessian": ("Hessian trace: time to a relative standard error, vs PyHessian", _hessian),
          "scans": ("41-point barrier vs loss-landscapes", _scans)}


def section_markdown(name: str, entry: dict) -> str:
    """One section: its heading, then its table, or its error or skip line."""
    heading, render = RENDER[name]
    parts = [f"## {heading}", ""]
    if entry["status"] == "ok":
        try:
            parts.append(render(entry))
        except (KeyError, TypeError, ValueError) as err:  # a table that cannot be drawn is said, not hidden
            parts.append(f"**error** drawing the table: {type(err).__name__}: {err}")
    else:
        parts.append(f"**{entry['status']}**" + (f": {entry['error']}" if "error" in entry else ""))
    parts.append(f"\n({entry['seconds']:.1f} s of a {entry['budget_s']:.0f} s share)")
    return "\n".join(parts)


def targets(report: dict) -> list[dict]:
    """The issue's targets (ratios, median of the paired rounds) against what was measured, where it was."""
    found = []
    sections = {k: v for k, v in report["sections"].items() if v["status"] == "ok"}
    for r in sections.get("engines", {}).get("rows", []):
        if (r["model"], r["variant"], r["particles"], r["engine"]) == ("cnn1d", "fp32", 4, "vectorized") \
                and r.get("ratio_vs_one"):
            found.append({"target": "vectorized cnn1d: N = 4 particles / one", "limit": 1.5,
                          "measured": r["ratio_vs_one"]["median"]})
    if "swa_step" in sections:
        found.append({"target": "masked SWA step / plain loop", "limit": sections["swa_step"]["target"],
                      "measured": sections["swa_step"]["masked_swa_vs_plain"]["median"]})
    for r in sections.get("hessian", {}).get("rows", []):
        if r["target_rse"] == 0.02:
            found.append({"target": "Hessian trace to 2% RSE / PyHessian" + (
                " (PyHessian's time projected)" if r["pyhessian_projected"] else ""),
                "limit": sections["hessian"]["target"], "measured": r["ratio"]["median"]})
    if "scans" in sections:
        found.append({"target": "41-point barrier / loss-landscapes", "limit": sections["scans"]["target"],
                      "measured": sections["scans"]["ours_vs_loss_landscapes"]["median"]})
        if sections["scans"].get("modules_vs_loss_landscapes"):
            found.append({"target": "41-point barrier on loaded modules / loss-landscapes",
                          "limit": sections["scans"]["target"],
                          "measured": sections["scans"]["modules_vs_loss_landscapes"]["median"]})
    for t in found:
        t["met"] = t["measured"] <= t["limit"]
    return found


def markdown(report: dict, title: str, machine_line: str) -> str:
    """The report as Markdown: title, machine, then each finished section."""
    parts = [title, "", f"{machine_line}; {report['mode']} mode, budget {report['budget_s']:g} s, device "
             f"{report['device']}" + ("" if report["finished"] else " (unfinished)")]
    met = targets(report)
    if met:
        parts += ["", "## Targets", "", table(["target", "at most", "measured", "met"], [
            [t["target"], f"{t['limit']:.2f}x", f"{t['measured']:.2f}x", "yes" if t["met"] else "**no**"]
            for t in met])]
    for name, entry in report["sections"].items():
        parts += ["", section_markdown(name, entry)]
    return "\n".join(parts) + "\n"
