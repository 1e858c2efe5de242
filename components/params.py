from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE)
def make_params_op(data: str, tracks: str, representation: str, validate: str, tensorize: str,
                   model: str, train: str, evaluate: str, register: str, mlflow: str) -> str:
    """Assemble the per-section pipeline parameters into one params JSON, validated once here."""
    import json

    from lpdvae.params import params_from_dict

    sections = {"data": data, "tracks": tracks, "representation": representation, "validate": validate,
                "tensorize": tensorize, "model": model, "train": train, "evaluate": evaluate,
                "register": register, "mlflow": mlflow}
    raw = {name: json.loads(text) for name, text in sections.items()}
    return json.dumps(params_from_dict(raw, source="pipeline parameters").to_dict())
