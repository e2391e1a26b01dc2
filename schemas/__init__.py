"""Wire messages of the agent protocol: pydantic v2 models, frozen and strict, and the JSON
Schema files exported from them for agent authors."""
