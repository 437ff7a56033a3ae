SELECT
  `t1`.`customer_id`
FROM (
  SELECT
    *
  FROM `customers` AS `t0`
  WHERE
    (
      CAST(SUBSTRING(
        IF(
          GET_JSON_OBJECT(`t0`.`traits`, '$.birthday') RLIKE '^[0-9]{4}-[0-9]{2}-[0-9]{2}',
          GET_JSON_OBJECT(`t0`.`traits`, '$.birthday'),
          NULL
        ),
        IF(
          (
            5 + 1
          ) >= 1,
          5 + 1,
          5 + 1 + LENGTH(
            IF(
              GET_JSON_OBJECT(`t0`.`traits`, '$.birthday') RLIKE '^[0-9]{4}-[0-9]{2}-[0-9]{2}',
              GET_JSON_OBJECT(`t0`.`traits`, '$.birthday'),
              NULL
            )
          )
        ),
        2
      ) AS INT) * 100
    ) + CAST(SUBSTRING(
      IF(
        GET_JSON_OBJECT(`t0`.`traits`, '$.birthday') RLIKE '^[0-9]{4}-[0-9]{2}-[0-9]{2}',
        GET_JSON_OBJECT(`t0`.`traits`, '$.birthday'),
        NULL
      ),
      IF(
        (
          8 + 1
        ) >= 1,
        8 + 1,
        8 + 1 + LENGTH(
          IF(
            GET_JSON_OBJECT(`t0`.`traits`, '$.birthday') RLIKE '^[0-9]{4}-[0-9]{2}-[0-9]{2}',
            GET_JSON_OBJECT(`t0`.`traits`, '$.birthday'),
            NULL
          )
        )
      ),
      2
    ) AS INT) IN (301, 302, 303, 304)
) AS `t1`
