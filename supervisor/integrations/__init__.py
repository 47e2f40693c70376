"""Shapes users plug in (LangChain, the OpenAI client wrapper, a proxy server), installed as
``supervisor.integrations``. Each integration imports its framework only when used."""
