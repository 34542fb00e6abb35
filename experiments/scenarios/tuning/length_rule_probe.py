"""A prompt-length rule on one workload (post hoc, VALIDATION split only; beside ``ranker_probe.py``).

The azure_code trace has no prompt text, and its latent quality is planted on the prompt's length (the
observable part of the difficulty, ``conf/quality/latent.yaml``) while its price grows with the length too: the
threshold rule's n-gram classifier has nothing to read there. Is the learned policies' val edge on it more
than a length cut? The study's own ``length_cut`` baseline (:class:`rlroute.policies.simple.LengthCut`): "large when input_len <= L"
or "> L", L and the side tuned on val seeds 1000-1001 by ``rlroute.study.runner.tuned_length_cut`` (the study's
grid ``length_cuts``), reported on val seeds 1002-1003 (as ``ranker_probe.py``).

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/tuning/length_rule_probe.py --member azure_code \\
        --out experiments/scenarios/tuning/ranker_probe/length_rule_azure_code.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlroute.study.runner import tuned_length_cut

sys.path.insert(0, str(Path(__file__).parent))
from ranker_probe import mean_reward, workload_config  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--member", default="azure_code", help="a LOWO member (conf/study.yaml lowo.members)")
    ap.add_argument("--scenario", default=None, help="a conf/scenario/ file instead (its dedicated regime)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    study, cfg = workload_config(args.member, args.scenario)
    args.member = args.scenario or args.member
    rule, tuning = tuned_length_cut(cfg, study)
    out = {"member": args.member, "cut_tokens": rule.cut_tokens, "large_when": rule.large_when,
           "val_1000_1001": max(tuning["val_reward_by_cut"].values()), "val_1002_1003": mean_reward(rule, cfg, [1002, 1003]),
           "tuning": tuning}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
