# a namespace package shared with dbt-core and every adapter, as they write it
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
