"""An episode is the same whether the process-level memos (request blocks, cues, quality) are cold or warm."""

from __future__ import annotations

import importlib

import numpy as np

from rlroute.env import build_env, default_config
from rlroute.quality import difficulty, latent


def clear_memos() -> None:
    importlib.import_module("rlroute.features.extract")._BLOCK_MEMO.clear()
    importlib.import_module("rlroute.features.text")._CUES_MEMO.clear()
    difficulty._TEXT_MEMO.clear()
    latent._HIDDEN_MEMO.clear()


def episode(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[float, ...]]]:
    env = build_env(default_config(["episode_length=48"]), split="train")
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    all_obs, rewards, quality = [obs], [], []
    for _ in range(env.episode_length):
        obs, r, _, trunc, info = env.step(int(rng.integers(0, 3)))
        all_obs.append(obs)
        rewards.append(r)
        quality.append((info["quality_p"], float(info["quality_ok"]), info["cost"]))
        if trunc:
            break
    return np.stack(all_obs), np.array(rewards), quality


def test_cold_and_warm_memos_give_the_same_episode() -> None:
    clear_memos()
    cold = episode(5)
    warm = episode(5)  # every prompt of the episode now hits the memos
    assert np.array_equal(cold[0], warm[0])
    assert np.array_equal(cold[1], warm[1])
    assert cold[2] == warm[2]


def test_completions_info_is_a_list_shared_by_deepcopy() -> None:
    import copy

    env = build_env(default_config(["episode_length=64"]), split="train")
    env.reset(seed=1)
    infos = [env.step(1)[4] for _ in range(64)]
    lists = [i["completions"] for i in infos]
    assert any(lists) and all(isinstance(c, list) for c in lists)
    copied = copy.deepcopy(infos)  # what SB3's DummyVecEnv does at every step
    assert all(a["completions"] is b["completions"] for a, b in zip(infos, copied, strict=True))
