"""EM per-sample baseline: error-minimising noise, min-min (Huang et al., ICLR 2021).

Alternate until every classification task's error on the poisoned train split is ≤ stop_error (1 %) or
`rounds` (--epochs) rounds have run: (1) `surrogate_steps` Adam steps (gradient clip 5) of a surrogate trained from
scratch on x + δ, the loop MTL-UE's EM base shares (`surrogate.train_on_poisoned`);
(2) for every sample, PGD-L∞ that *minimises* the task losses from x + δ (20 steps of 0.8/255,
`--objective total|dgba`). δ starts as U(−ε, ε). State (δ, surrogate, optimiser, round) is saved
under work_dir/em/ after each round, so a killed run resumes from the last finished round.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.attacks import PGD
from mtlue.data.base import batch_tensors
from mtlue.models.mtl import atomic_torch_save, checkpoint_errors, load_torch_file
from mtlue.protect.base import ProtectionMethod
from mtlue.protect.samplewise import delta_array, only_protected, step_size_or_default, steps_or_default
from mtlue.protect.surrogate import EM_SURROGATE_RULES, PoisonedError, fresh_surrogate, train_on_poisoned

PUBLISHED_STEPS = 20
PUBLISHED_STEP_SIZE = 0.8 / 255
STATE_FILE = "state.pt"


class EMMethod(ProtectionMethod):
    """Sample-wise error-minimising noise with an alternately trained surrogate."""

    name = "em"

    def prepare(self, context) -> None:
        super().prepare(context)
        config, settings = self.config, self.settings
        self.steps = steps_or_default(settings, PUBLISHED_STEPS)
        self.alpha = step_size_or_default(settings, PUBLISHED_STEP_SIZE)
        height, width, channels = context.source.image_shape
        indices = np.concatenate([b.index for b in context.batches(4096)])
        self.position = {int(index): p for p, index in enumerate(indices)}
        model, optimiser = fresh_surrogate(context, config.seed)
        noise = torch.Generator().manual_seed(config.seed)
        # δ in float16 (N, C, H, W): half the memory, well below the 1/255 quantum of the stored bytes
        self.delta = ((torch.rand((len(indices), channels, height, width), generator=noise) * 2 - 1) * config.eps).half()
        self.history, start = [], 0
        state_path = context.work_dir / "em" / STATE_FILE
        key = self._state_key()
        if state_path.is_file():
            state = load_torch_file(state_path)
            with checkpoint_errors(state_path):
                if state.get("key") == key:  # otherwise another setting or dataset made it: start over
                    self.delta, start, self.history = state["delta"], state["round"], list(state["history"])
                    model.load_state_dict(state["model"])
                    optimiser.load_state_dict(state["optimiser"])
        finished = bool(self.history) and self.history[-1] <= settings.stop_error
        for round_index in range(start, settings.rounds if not finished else start):
            self._train_surrogate(model, optimiser, round_index)
            error = self._update_noise(model)
            self.history.append(error)
            atomic_torch_save({"key": key, "delta": self.delta, "round": round_index + 1, "history": self.history,
                               "model": model.state_dict(), "optimiser": optimiser.state_dict()}, state_path)
            if context.progress:
                print(f"[protect] em round {round_index + 1}/{settings.rounds}: poisoned-train error {error:.4g} "
                      f"(stops at <= {settings.stop_error:g})", flush=True)
            context.iteration_done(round_index)
            if error <= settings.stop_error:
                break
        if self.history and self.history[-1] > settings.stop_error and len(self.history) >= settings.rounds:
            print(f"[protect] em: stopped at the cap of {settings.rounds} rounds with poisoned-train error "
                  f"{self.history[-1]:.4g} > {settings.stop_error:g} (the stop rule was not met; --epochs raises the "
                  f"cap and resumes)", flush=True)

    def _state_key(self) -> str:
        """JSON of every input of the saved δ: the resume settings it was optimised with and the data.
        The round cap (`rounds`) is left out so a resumed run may be given more rounds."""
        import json

        return json.dumps({"settings": self.config.resume_settings(), "steps": self.steps, "step_size": self.alpha,
                           "surrogate_rules": EM_SURROGATE_RULES, "data": self.context.data_identity()},
                          sort_keys=True, default=str)

    def _poisoned(self, images, index):
        positions = torch.as_tensor([self.position[int(i)] for i in index])
        return torch.clamp(images + self.delta[positions].to(images), 0.0, 1.0), positions

    def _train_surrogate(self, model, optimiser, round_index) -> None:
        """EM's surrogate step on x + δ: `train_on_poisoned` over a loader seeded by the round."""
        context, config = self.context, self.config
        order = torch.Generator().manual_seed(config.seed * 1000 + round_index)
        loader = context.train_loader(config.batch_size, shuffle=True, generator=order)
        train_on_poisoned(model, optimiser, loader, lambda x, labels, masks, index: self._poisoned(x, index)[0],
                          context.tasks, self.settings.surrogate_steps, context.device)

    def _update_noise(self, model) -> float:
        """One PGD pass over all samples from x + δ; returns EM's `PoisonedError` on the new x + δ."""
        context, config = self.context, self.config
        attack = PGD(model, eps=config.eps, alpha=self.alpha, steps=self.steps, random_start=False,
                     objective=self.settings.objective, targeted=True)
        errors = PoisonedError(context.tasks, context.protected_tasks)
        from tqdm.auto import tqdm

        count = len(self.position)
        for batch in tqdm(context.batches(config.batch_size), total=-(-count // config.batch_size), leave=False,
                          desc="em noise (PGD per sample)", disable=not context.progress):
            images, labels, masks = batch_tensors(batch, context.device)
            start, positions = self._poisoned(images, batch.index)
            poisoned = attack(images, labels, only_protected(masks, context.protected_tasks), start=start)
            self.delta[positions] = (poisoned - images).clamp(-config.eps, config.eps).half().cpu()
            with torch.no_grad():
                errors.add(model(poisoned), labels, masks)
        return errors.worst()

    def perturb(self, batch, device) -> np.ndarray:
        images = batch_tensors(batch, "cpu")[0]  # δ is held on the CPU
        poisoned, _ = self._poisoned(images, batch.index)
        return delta_array(poisoned, images, self.config.eps)

    def record(self) -> dict:
        settings = self.settings
        return {"steps": self.steps, "step_size": self.alpha * 255, "objective": settings.objective,
                "rounds": len(self.history), "poisoned_train_error": self.history[-1] if self.history else None,
                "stop_error": settings.stop_error, "surrogate_steps_per_round": settings.surrogate_steps,
                "stopped_by": ("stop_rule" if self.history and self.history[-1] <= settings.stop_error
                               else "cap" if len(self.history) >= settings.rounds else "unfinished"),
                "poisoned_error_curve": list(self.history)}
