"""speechattn-results: one markdown table comparing every experiment of a recipe run.

    speechattn-results task=phone exp_root=exp output=RESULTS.md
    speechattn-results task=sid exp_root=exp output=RESULTS.md

Reads ``exp_root/*/scores/scores.json`` (written by speechattn-score) and writes a table sorted by
experiment name. The context / encoder columns are the descriptions speechattn-score stored (from the
encoder's ``describe_context``), so a new encoder gets its column without a change here. Phone columns: frame accuracy, PER; speaker (sid) columns: identification top-1/top-5 and
verification EER/minDCF (empty where an experiment was not scored that way).
Plain argparse-free ``key=value`` arguments, like the Hydra entry points.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from speechattn.bin._hydra import one_line_errors
from speechattn.utils.atomic import atomic_write_text

PHONE_COLUMNS = [("model", "model"), ("params (M)", "params"), ("context (frames)", "context"),
                 ("frame acc. (%)", "frame_accuracy"), ("non-SIL frame acc. (%)", "non_silence_frame_accuracy"),
                 ("PER (%)", "per"), ("dev acc. (%)", "best_valid_accuracy"), ("epochs", "epochs"),
                 ("train time (min)", "train_minutes")]


def phone_row(exp: Path, scores: dict) -> dict[str, str]:
    params = f"{scores['num_params'] / 1e6:.2f}" if scores.get("num_params") else ""
    return {"model": exp.name, "params": params, "context": scores.get("context", ""),
            "frame_accuracy": f"{scores['frame_accuracy']:.2f}",
            "non_silence_frame_accuracy": f"{scores['non_silence_frame_accuracy']:.2f}",
            "per": f"{scores['per']['per']:.2f}", "best_valid_accuracy": f"{scores.get('best_valid_accuracy', '')}",
            "epochs": str(scores.get("epochs", "")),
            "train_minutes": f"{scores['train_seconds'] / 60:.1f}" if "train_seconds" in scores else ""}


SID_COLUMNS = [("experiment", "experiment"), ("params (M)", "params"), ("encoder", "encoder"),
               ("pooling / head", "head"), ("test set", "test_set"), ("speakers", "speakers"),
               ("top-1 (%)", "top1"), ("top-5 (%)", "top5"), ("top-1 PLDA (%)", "top1_plda"),
               ("top-1 head + PLDA (%)", "top1_fused"), ("EER (%)", "eer"), ("minDCF", "min_dcf"),
               ("EER AS-norm (%)", "eer_asnorm"), ("minDCF AS-norm", "min_dcf_asnorm"),
               ("EER PLDA (%)", "eer_plda"), ("minDCF PLDA", "min_dcf_plda"),
               ("EER PLDA AS-norm (%)", "eer_plda_asnorm"), ("minDCF PLDA AS-norm", "min_dcf_plda_asnorm"),
               ("dev acc. (%)", "best_valid_accuracy"), ("epochs", "epochs"), ("train time (min)", "train_minutes")]


def sid_row(exp: Path, scores: dict) -> dict[str, str]:
    sid = scores.get("sid", {})
    ident, verif = scores.get("identification", {}), scores.get("verification", {})
    params = f"{scores['num_params'] / 1e6:.2f}" if scores.get("num_params") else ""
    if ident:
        speakers = f"{ident['num_speakers']} (closed set)"
    elif verif:
        speakers = f"{scores.get('num_unseen_speakers', '?')} unseen"
    else:
        speakers = ""
    trials = f", {verif['num_trials']} trials" if verif else ""
    norm = verif.get("asnorm", {}) if verif else {}
    plda = verif.get("plda", {}) if verif else {}
    plda_norm = verif.get("plda_asnorm", {}) if verif else {}
    p_target = f" (p={verif['p_target']:g})" if verif else ""
    return {"experiment": exp.name, "params": params, "encoder": scores.get("encoder", ""),
            "head": f"{sid.get('pooling', '?')} / {sid.get('head', '?')}" if sid else "",
            "test_set": f"{Path(scores.get('ref_dir', '')).name}{trials}", "speakers": speakers,
            "top1": f"{ident['top1']:.2f}" if ident else "", "top5": f"{ident['top5']:.2f}" if ident else "",
            "top1_plda": f"{ident['plda']['top1']:.2f}" if "plda" in ident else "",
            "top1_fused": f"{ident['fused']['top1']:.2f}" if "fused" in ident else "",
            "eer": f"{verif['eer']:.2f}" if verif else "",
            "min_dcf": f"{verif['min_dcf']:.3f}{p_target}" if verif else "",
            "eer_asnorm": f"{norm['eer']:.2f}" if norm else "", "min_dcf_asnorm": f"{norm['min_dcf']:.3f}" if norm else "",
            "eer_plda": f"{plda['eer']:.2f}" if plda else "", "min_dcf_plda": f"{plda['min_dcf']:.3f}" if plda else "",
            "eer_plda_asnorm": f"{plda_norm['eer']:.2f}" if plda_norm else "",
            "min_dcf_plda_asnorm": f"{plda_norm['min_dcf']:.3f}" if plda_norm else "",
            "best_valid_accuracy": f"{scores.get('best_valid_accuracy', '')}", "epochs": str(scores.get("epochs", "")),
            "train_minutes": f"{scores['train_seconds'] / 60:.1f}" if "train_seconds" in scores else ""}


def markdown_table(columns: list[tuple[str, str]], rows: list[dict[str, str]]) -> str:
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(r.get(k, "") for _, k in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    task, exp_root, output = args.get("task", "phone"), Path(args.get("exp_root", "exp")), args.get("output")
    row_of = {"phone": phone_row, "sid": sid_row}.get(task)
    if row_of is None:
        raise SystemExit(f"speechattn-results: unknown task '{task}' (phone | sid)")
    rows = [row_of(path.parent.parent, json.loads(path.read_text()))
            for path in sorted(exp_root.glob("*/scores/scores.json"))]
    if not rows:
        raise SystemExit(f"speechattn-results: no {exp_root}/*/scores/scores.json found (run stage 5 first)")
    table = markdown_table(PHONE_COLUMNS if task == "phone" else SID_COLUMNS, rows)
    if output:
        atomic_write_text(output, table)
    print(table, end="")


if __name__ == "__main__":
    main()
