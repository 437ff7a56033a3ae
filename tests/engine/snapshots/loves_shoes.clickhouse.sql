SELECT
  "t11"."customer_id" AS "customer_id"
FROM (
  SELECT
    "t3"."customer_id" AS "customer_id",
    "t10"."customer_id" AS "customer_id_right",
    "t10"."value" AS "value"
  FROM (
    SELECT
      "t0"."customer_id" AS "customer_id"
    FROM "customers" AS "t0"
  ) AS "t3"
  LEFT OUTER JOIN (
    SELECT
      "t8"."customer_id" AS "customer_id",
      "t8"."value" AS "value"
    FROM (
      SELECT
        "t7"."customer_id" AS "customer_id",
        "t7"."value" AS "value",
        "t7"."n" AS "n",
        ROW_NUMBER() OVER (
          PARTITION BY "t7"."customer_id"
          ORDER BY "t7"."n" DESC, "t7"."value" ASC
          ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) - 1 AS "rank"
      FROM (
        SELECT
          "t6"."customer_id" AS "customer_id",
          "t6"."value" AS "value",
          COUNT(*) AS "n"
        FROM (
          SELECT
            *
          FROM (
            SELECT
              "t4"."customer_id" AS "customer_id",
              CASE
                WHEN JSONType("t4"."properties", 'category') = 'String'
                THEN JSONExtractString("t4"."properties", 'category')
                ELSE NULL
              END AS "value"
            FROM (
              SELECT
                *
              FROM "events" AS "t1"
              WHERE
                "t1"."type" = 'track'
                AND "t1"."name" = 'Product Viewed'
                AND "t1"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
                AND "t1"."timestamp" > parseDateTimeBestEffort('2025-09-02T12:00:00+00:00', 'UTC')
            ) AS "t4"
          ) AS "t5"
          WHERE
            isNotNull("t5"."value")
        ) AS "t6"
        GROUP BY
          "t6"."customer_id",
          "t6"."value"
      ) AS "t7"
    ) AS "t8"
    WHERE
      "t8"."rank" = 0
  ) AS "t10"
    ON "t3"."customer_id" = "t10"."customer_id"
) AS "t11"
WHERE
  "t11"."value" = 'shoes'
