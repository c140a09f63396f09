"""A streaming model in MLServer's shape: ``predict_stream`` yields one response per word.

It stands in for a token-by-token text generator (an LLM): the response to a prompt comes as a
stream of small responses, each sent to the client as soon as the model yields it. Try it with
the demo running (``-N`` keeps curl from buffering the events):

    curl -N localhost:8080/v2/models/word-stream/generate_stream -d '{"inputs": [
      {"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["hello streaming world"]}]}'

or over gRPC with ``tritonclient.grpc``'s ``start_stream`` and ``async_stream_infer``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inferkit import InferenceRequest, InferenceResponse, Model
from inferkit.codecs import StringCodec

#: Seconds between two words, so that the stream is visible in a terminal.
PAUSE_S = 0.1


class WordStream(Model):
    """Streams the words of each request's ``prompt``, one response per word."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # The unary answer (``/infer``): all the words at once.
        return InferenceResponse(
            model_name=self.name, outputs=[StringCodec.encode_output("word", _words(payload))]
        )

    async def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        async for payload in payloads:
            for word in _words(payload):
                yield InferenceResponse(
                    model_name=self.name, outputs=[StringCodec.encode_output("word", [word])]
                )
                await asyncio.sleep(PAUSE_S)


def _words(payload: InferenceRequest) -> list[str]:
    prompts = StringCodec.decode_input(payload.inputs[0])
    return [word for prompt in prompts for word in prompt.split()]
