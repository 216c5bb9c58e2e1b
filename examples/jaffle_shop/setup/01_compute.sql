-- The control plane the scoring model needs: a compute pool for the service and a repository for its image.
CREATE COMPUTE POOL IF NOT EXISTS {{ var('compute_pool') }}
  MIN_NODES = 1
  MAX_NODES = 1
  INSTANCE_FAMILY = 'CPU_X64_XS'
  AUTO_RESUME = TRUE;

CREATE IMAGE REPOSITORY IF NOT EXISTS {{ var('image_repo') }};
