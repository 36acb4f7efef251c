"""HSEmotion on MTCNN face crops, as the released Affective-TRM encodes its video (issue 16,
item 20).

Story: CREMA-D's recipe extracts HSEmotion with `face_crop=mtcnn`: facenet-pytorch's shipped
MTCNN finds the largest face (offline), the crop is min-max stretched to uint8 and resized as
HSEmotion does; a frame without a face gives a row of zeros. The option is in the stream key and
the alias, and the TRM head's paper profile says `approximate` when its video stream was encoded
from whole frames instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.encoders import create_encoder
from extract.plan import stream_info
from features_store import UserError, open_store
from heads.trm.head import face_cropped
from pipelines.datasets import get_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face_frame() -> np.ndarray:
    """Grace Hopper's portrait, shipped with matplotlib, scaled down (a real face, offline)."""
    from matplotlib import cbook
    from PIL import Image

    image = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    return np.asarray(image.resize((128, 150), Image.BILINEAR))


@pytest.fixture(scope="module")
def encoders():
    crop = create_encoder("hsemotion-enet-b0", weights="random", reduced=True,
                          face_crop="mtcnn")
    plain = create_encoder("hsemotion-enet-b0", weights="random", reduced=True)
    return crop, plain


def test_the_face_crop_is_an_option_recorded_in_the_stream_key_and_alias(encoders):
    crop, plain = encoders
    assert crop.alias == "hsemotion-enet-b0@mtcnn@random@reduced"
    assert plain.alias == "hsemotion-enet-b0@random@reduced"
    assert crop.fingerprint()["options"] == {"face_crop": "mtcnn"}
    assert crop.fingerprint()["preprocessing"]["face_crop"]["select_largest"] is True
    assert crop.arch["detector"]["package"] == "facenet-pytorch"
    keys = {stream_info(e, None, 25.0, "float16").with_key().key for e in (crop, plain)}
    assert len(keys) == 2
    with pytest.raises(UserError, match="face_crop='retina'"):
        create_encoder("hsemotion-enet-b0", weights="random", reduced=True, face_crop="retina")


def test_mtcnn_crops_the_largest_face_as_the_released_encoder_and_no_face_is_zeros(
        encoders, face_frame):
    from facenet_pytorch import MTCNN
    from PIL import Image
    from torchvision import transforms

    crop, _ = encoders
    blank = np.full_like(face_frame, 90)
    inputs = crop.preprocess(np.stack([face_frame, blank]))
    # the released VideoEncoder, written out: MTCNN(keep_all=False, select_largest=True), the
    # crop stretched to uint8, then LocalHSEmotion's test_transforms
    with torch.no_grad():
        face = MTCNN(keep_all=False, select_largest=True, device="cpu")(
            Image.fromarray(face_frame))
    assert face is not None and face.shape == (3, 160, 160)
    face_np = face.permute(1, 2, 0).numpy()
    face_np = ((face_np - face_np.min()) / (face_np.max() - face_np.min()) * 255).astype(
        np.uint8)
    released = transforms.Compose([
        transforms.Resize((224, 224)), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    torch.testing.assert_close(inputs[0], released(Image.fromarray(face_np)), atol=1e-6,
                               rtol=0)
    assert torch.isnan(inputs[1]).all()  # no face in the blank frame
    rows = crop.encode_batch(inputs)
    assert rows[0].abs().sum() > 0 and not rows[1].any()  # the released encoder's zero row
    assert torch.isfinite(rows).all()


def test_cremad_recipe_extracts_face_crops_and_the_trm_paper_profile_checks_it(
        encoders, tmp_path):
    assert get_adapter("cremad").recipe.encoder_options == {
        "hsemotion-enet-b0": {"face_crop": "mtcnn"}}
    crop, plain = encoders
    for encoder, cropped in ((crop, True), (plain, False)):
        store = open_store(str(tmp_path / f"{encoder.alias}.zarr"), mode="a", dataset="cremad")
        store.create_stream(stream_info(encoder, None, 25.0, "float16"))
        # what the paper profile's `approximate` note on whole frames is decided on
        assert face_cropped(store.resolve("hsemotion-enet-b0")) is cropped
