"""Small leaves that several subsystems of the connector share.

Each imports the standard library, pydantic and :mod:`kec` only, never another module of
``connector`` (tests/unit/test_layout.py), so the configuration, the rules, the pipeline,
the dispatcher, the targets and the gateway can all use them without importing each other:

* :mod:`~connector.common.model_base`: the base of every model read from a config file
  (the configuration's sections, the targets' settings, the rules);
* :mod:`~connector.common.retry`: the retry policy's numbers (the configuration states
  it, the dispatcher applies it);
* :mod:`~connector.common.redaction`: secrets kept out of everything printed (the
  configuration hides them, the targets redact their URLs and answers);
* :mod:`~connector.common.outage`: an outage of the store or Kafka said in few lines
  (the pipeline, the dispatcher, the service);
* :mod:`~connector.common.json_depth`: how deep a JSON text nests, found without parsing
  it (rule conditions, the HTTP gateway).
* :mod:`~connector.common.heap`: the garbage collector's settings for a process the
  connector owns (``run`` and its children).
"""
