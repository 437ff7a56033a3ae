SELECT
  "t14"."customer_id" AS "customer_id"
FROM (
  SELECT
    "t8"."customer_id" AS "customer_id"
  FROM (
    SELECT
      "t6"."customer_id" AS "customer_id",
      COUNT(*) AS "value"
    FROM (
      SELECT
        *
      FROM "events" AS "t0"
      WHERE
        "t0"."type" = 'track'
        AND "t0"."name" = 'Product Viewed'
        AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
        AND "t0"."timestamp" > parseDateTimeBestEffort('2026-01-30T12:00:00+00:00', 'UTC')
        AND CASE
          WHEN JSONType("t0"."properties", 'category') = 'String'
          THEN JSONExtractString("t0"."properties", 'category')
          ELSE NULL
        END = 'shoes'
    ) AS "t6"
    GROUP BY
      "t6"."customer_id"
  ) AS "t8"
  WHERE
    "t8"."value" >= 2.0
) AS "t14"
LEFT SEMI JOIN (
  SELECT
    "t7"."customer_id" AS "customer_id"
  FROM (
    SELECT
      *
    FROM "customers" AS "t1"
    WHERE
      CASE
        WHEN JSONType("t1"."traits", 'country') = 'String'
        THEN JSONExtractString("t1"."traits", 'country')
        ELSE NULL
      END IN ('UA', 'PL')
  ) AS "t7"
) AS "t12"
  ON "t14"."customer_id" = "t12"."customer_id"
LEFT ANTI JOIN (
  SELECT
    "t4"."customer_id" AS "customer_id"
  FROM (
    SELECT DISTINCT
      "t0"."customer_id" AS "customer_id"
    FROM "events" AS "t0"
    WHERE
      "t0"."type" = 'track'
      AND "t0"."name" = 'Order Completed'
      AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
  ) AS "t4"
  LEFT ANTI JOIN (
    SELECT
      "t0"."customer_id" AS "customer_id"
    FROM "events" AS "t0"
    WHERE
      "t0"."type" = 'track'
      AND "t0"."name" = 'Order Completed'
      AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
      AND "t0"."timestamp" > parseDateTimeBestEffort('2026-01-30T12:00:00+00:00', 'UTC')
  ) AS "t5"
    ON "t4"."customer_id" = "t5"."customer_id"
) AS "t11"
  ON "t14"."customer_id" = "t11"."customer_id"
