SELECT DISTINCT
  `t4`.`customer_id`
FROM (
  SELECT
    *
  FROM (
    SELECT
      *
    FROM `events` AS `t0`
    WHERE
      `t0`.`type` = 'track'
      AND `t0`.`name` = 'Product Added'
      AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
      AND `t0`.`timestamp` > CAST('2026-02-26T12:00:00+00:00' AS TIMESTAMP)
      AND `t0`.`timestamp` <= CAST('2026-03-01T08:00:00+00:00' AS TIMESTAMP)
  ) AS `t2`
  WHERE
    NOT (
      EXISTS(
        SELECT
          1
        FROM `events` AS `t1`
        WHERE
          `t1`.`type` = 'track'
          AND `t1`.`name` = 'Order Completed'
          AND `t1`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
          AND `t1`.`timestamp` > CAST('2026-02-26T12:00:00+00:00' AS TIMESTAMP)
          AND (
            (
              `t1`.`customer_id` = `t2`.`customer_id`
            )
            AND (
              `t1`.`timestamp` > `t2`.`timestamp`
            )
            AND (
              `t1`.`timestamp` <= (
                `t2`.`timestamp` + INTERVAL '14400' SECOND
              )
            )
          )
      )
    )
) AS `t4`
