"""Published speaker models by name: ``modelscope:<id>``, ``hf:<repo>[@rev][/file]``, ``pip:<package>``.

Converting a published state dict into a voxray checkpoint is pure PyTorch and lives in
``models/hub/importers/`` (one module per publisher's layout). Why this is under ``models/``
although it reads files: ``models.load_model`` accepts a model by name (the pretrained on-ramp),
and ``models/`` is the lowest layer that both Serve and the jobs import.
"""
