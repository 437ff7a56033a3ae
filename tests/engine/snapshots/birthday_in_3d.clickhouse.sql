SELECT
  "t1"."customer_id" AS "customer_id"
FROM (
  SELECT
    *
  FROM "customers" AS "t0"
  WHERE
    (
      CAST(SUBSTRING(
        CASE
          WHEN match(
            CASE
              WHEN JSONType("t0"."traits", 'birthday') = 'String'
              THEN JSONExtractString("t0"."traits", 'birthday')
              ELSE NULL
            END,
            '^[0-9]{4}-[0-9]{2}-[0-9]{2}'
          )
          THEN CASE
            WHEN JSONType("t0"."traits", 'birthday') = 'String'
            THEN JSONExtractString("t0"."traits", 'birthday')
            ELSE NULL
          END
          ELSE NULL
        END,
        CASE
          WHEN (
            5 + 1
          ) >= 1
          THEN 5 + 1
          ELSE 5 + 1 + LENGTH(
            CASE
              WHEN match(
                CASE
                  WHEN JSONType("t0"."traits", 'birthday') = 'String'
                  THEN JSONExtractString("t0"."traits", 'birthday')
                  ELSE NULL
                END,
                '^[0-9]{4}-[0-9]{2}-[0-9]{2}'
              )
              THEN CASE
                WHEN JSONType("t0"."traits", 'birthday') = 'String'
                THEN JSONExtractString("t0"."traits", 'birthday')
                ELSE NULL
              END
              ELSE NULL
            END
          )
        END,
        2
      ) AS Nullable(Int32)) * 100
    ) + CAST(SUBSTRING(
      CASE
        WHEN match(
          CASE
            WHEN JSONType("t0"."traits", 'birthday') = 'String'
            THEN JSONExtractString("t0"."traits", 'birthday')
            ELSE NULL
          END,
          '^[0-9]{4}-[0-9]{2}-[0-9]{2}'
        )
        THEN CASE
          WHEN JSONType("t0"."traits", 'birthday') = 'String'
          THEN JSONExtractString("t0"."traits", 'birthday')
          ELSE NULL
        END
        ELSE NULL
      END,
      CASE
        WHEN (
          8 + 1
        ) >= 1
        THEN 8 + 1
        ELSE 8 + 1 + LENGTH(
          CASE
            WHEN match(
              CASE
                WHEN JSONType("t0"."traits", 'birthday') = 'String'
                THEN JSONExtractString("t0"."traits", 'birthday')
                ELSE NULL
              END,
              '^[0-9]{4}-[0-9]{2}-[0-9]{2}'
            )
            THEN CASE
              WHEN JSONType("t0"."traits", 'birthday') = 'String'
              THEN JSONExtractString("t0"."traits", 'birthday')
              ELSE NULL
            END
            ELSE NULL
          END
        )
      END,
      2
    ) AS Nullable(Int32)) IN (301, 302, 303, 304)
) AS "t1"
