"""IdkDPO: DPO with a refusal ("I don't know") as the preferred answer and the forget answer as the rejected one."""

from hf_unlearn.methods.idk_dpo.method import IdkDPO, IdkDPOConfig, IdkDPOTrainer, dpo_loss, load_refusals
from hf_unlearn.methods.idk_dpo.refusals import REFUSALS
from hf_unlearn.registry import register_method

register_method(IdkDPO)

__all__ = ["REFUSALS", "IdkDPO", "IdkDPOConfig", "IdkDPOTrainer", "dpo_loss", "load_refusals"]
