import base64
import io

from PIL import Image


async def test_generate_b64(client):
    r = await client.images.generate(model="gpt-image-1", prompt="a red circle", n=2, size="1024x1024")
    assert len(r.data) == 2
    img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json)))
    assert img.size == (1024, 1024)
    assert r.size == "1024x1024" and r.quality == "medium" and r.output_format == "png" and r.background == "opaque"
    assert r.usage.output_tokens == 2 * 1056
