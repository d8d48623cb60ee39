<?xml version="1.0" encoding="UTF-8"?>
<!-- The canonical result or error (settlement.soap.canonical) to the rural-ncms reply message, which the engine
     puts, as a string, in invokeResponse/return:

       <response>
         <head><version>2000</version><functionNo>B020012</functionNo><msgId>…</msgId>
           <resultCode>1</resultCode><resultMessage>交易成功</resultMessage><errorCode/></head>
         <body>D504_xx result elements, categories, funds, D506_list</body>
       </response>

     resultCode: 1 success; -1 refused, the request must be corrected (4xx); -2 the service failed or was busy
     (5xx): retry with the same msgId, or cancel it (B090001). errorCode is the stable code (as in the REST API)
     and resultMessage "[CODE] detail". Money is only ever copied: sums come from <derived>, computed by the engine
     in decimal (XPath 1.0 numbers are floating point). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="code"/>
  <xsl:param name="message_id"/>

  <!-- Successes -->

  <xsl:template match="/result">
    <response>
      <xsl:call-template name="head">
        <xsl:with-param name="result" select="'1'"/>
        <xsl:with-param name="message">
          <xsl:choose>
            <xsl:when test="@replayed = 'true'">交易成功（重复交易，返回首次结果）</xsl:when>
            <xsl:otherwise>交易成功</xsl:otherwise>
          </xsl:choose>
        </xsl:with-param>
        <xsl:with-param name="error" select="''"/>
      </xsl:call-template>
      <body><xsl:apply-templates select="." mode="body"/></body>
    </response>
  </xsl:template>

  <!-- B010001: person (masked), participation, assistance categories, year-to-date figures. -->
  <xsl:template match="result[@operation = 'eligibility']" mode="body">
    <D504_05><xsl:value-of select="person"/></D504_05>
    <xsl:if test="string(region) != ''"><D504_06><xsl:value-of select="region"/></D504_06></xsl:if>
    <xsl:if test="string(scheme) != ''">
      <D504_07><xsl:call-template name="scheme-code"><xsl:with-param name="scheme" select="scheme"/></xsl:call-template></D504_07>
    </xsl:if>
    <D504_15><xsl:value-of select="on"/></D504_15>
    <D504_35><xsl:call-template name="flag"><xsl:with-param name="value" select="in_roster"/></xsl:call-template></D504_35>
    <categories>
      <xsl:for-each select="categories/item">
        <category>
          <code><xsl:value-of select="code"/></code>
          <name><xsl:value-of select="name"/></name>
          <validFrom><xsl:value-of select="valid_from"/></validFrom>
          <xsl:if test="string(valid_to) != ''"><validTo><xsl:value-of select="valid_to"/></validTo></xsl:if>
        </category>
      </xsl:for-each>
    </categories>
    <D504_36><xsl:value-of select="year_to_date/year"/></D504_36>
    <D504_37><xsl:value-of select="year_to_date/admissions"/></D504_37>
    <funds>
      <xsl:for-each select="year_to_date/paid/entry">
        <fund><code><xsl:value-of select="@key"/></code><paid><xsl:value-of select="."/></paid></fund>
      </xsl:for-each>
    </funds>
  </xsl:template>

  <!-- B020011: the shares of a bill, nothing recorded, and the quote id to settle it exactly as quoted. -->
  <xsl:template match="result[@operation = 'quote']" mode="body">
    <D504_09><xsl:value-of select="request/claim/visit/id"/></D504_09>
    <xsl:call-template name="name"/>
    <D504_17><xsl:value-of select="quote_id"/></D504_17>
    <D504_30><xsl:value-of select="expires_at"/></D504_30>
    <xsl:call-template name="shares"/>
  </xsl:template>

  <!-- B020012 and B020014: a settlement. -->
  <xsl:template match="result[@operation = 'settle' or @operation = 'get']" mode="body">
    <D504_09><xsl:value-of select="visit_id"/></D504_09>
    <xsl:call-template name="name"/>
    <D504_16><xsl:value-of select="settlement_id"/></D504_16>
    <D504_31><xsl:value-of select="status"/></D504_31>
    <D504_32><xsl:value-of select="recorded_at"/></D504_32>
    <xsl:if test="string(reversal/reversal_id) != ''"><D504_33><xsl:value-of select="reversal/reversal_id"/></D504_33></xsl:if>
    <D504_34><xsl:call-template name="flag"><xsl:with-param name="value" select="@replayed"/></xsl:call-template></D504_34>
    <xsl:call-template name="shares"/>
    <xsl:if test="corrections/item">
      <corrections>
        <xsl:for-each select="corrections/item">
          <correction>
            <id><xsl:value-of select="correction_id"/></id>
            <fund><xsl:value-of select="fund"/></fund>
            <amount><xsl:value-of select="amount"/></amount>
            <patientPays><xsl:value-of select="patient_pays"/></patientPays>
            <recordedAt><xsl:value-of select="recorded_at"/></recordedAt>
          </correction>
        </xsl:for-each>
      </corrections>
    </xsl:if>
  </xsl:template>

  <!-- B020013 and B090001: a reversal (every amount negative), or a cancellation that found nothing to reverse. -->
  <xsl:template match="result[@operation = 'reverse' or @operation = 'cancel']" mode="body">
    <xsl:variable name="settlement">
      <xsl:choose>
        <xsl:when test="string(settlement_id) != ''"><xsl:value-of select="settlement_id"/></xsl:when>
        <xsl:otherwise><xsl:value-of select="request/settlement_id"/></xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <xsl:if test="$settlement != ''"><D504_16><xsl:value-of select="$settlement"/></D504_16></xsl:if>
    <xsl:if test="@operation = 'cancel'">
      <D504_19>
        <xsl:choose>
          <xsl:when test="string(original_transaction_id) != ''"><xsl:value-of select="original_transaction_id"/></xsl:when>
          <xsl:otherwise><xsl:value-of select="request/original_transaction_id"/></xsl:otherwise>
        </xsl:choose>
      </D504_19>
    </xsl:if>
    <D504_31><xsl:value-of select="status"/></D504_31>
    <D504_32><xsl:value-of select="recorded_at"/></D504_32>
    <xsl:if test="string(reversal_id) != ''">
      <D504_33><xsl:value-of select="reversal_id"/></D504_33>
      <D504_14><xsl:value-of select="total"/></D504_14>
      <D504_29><xsl:value-of select="patient_pays"/></D504_29>
      <funds>
        <xsl:for-each select="entries/item">
          <fund><code><xsl:value-of select="fund"/></code><paid><xsl:value-of select="paid"/></paid></fund>
        </xsl:for-each>
      </funds>
    </xsl:if>
    <D504_34><xsl:call-template name="flag"><xsl:with-param name="value" select="@replayed"/></xsl:call-template></D504_34>
  </xsl:template>

  <!-- Failures, answered in the head; the body echoes what identifies the call and lists every problem. -->

  <xsl:template match="/error">
    <response>
      <xsl:call-template name="head">
        <xsl:with-param name="result">
          <xsl:choose>
            <xsl:when test="@status &gt;= 500">-2</xsl:when>
            <xsl:otherwise>-1</xsl:otherwise>
          </xsl:choose>
        </xsl:with-param>
        <xsl:with-param name="message" select="concat('[', code, '] ', detail)"/>
        <xsl:with-param name="error" select="string(code)"/>
      </xsl:call-template>
      <body>
        <xsl:if test="string(request/claim/visit/id) != ''"><D504_09><xsl:value-of select="request/claim/visit/id"/></D504_09></xsl:if>
        <xsl:call-template name="name"/>
        <xsl:if test="string(request/settlement_id) != ''"><D504_16><xsl:value-of select="request/settlement_id"/></D504_16></xsl:if>
        <xsl:if test="string(request/original_transaction_id) != ''">
          <D504_19><xsl:value-of select="request/original_transaction_id"/></D504_19>
        </xsl:if>
        <problems>
          <xsl:for-each select="problems/item">
            <problem>
              <code><xsl:value-of select="code"/></code>
              <path><xsl:value-of select="path"/></path>
              <xsl:variable name="element">
                <xsl:call-template name="element-of"><xsl:with-param name="path" select="string(path)"/></xsl:call-template>
              </xsl:variable>
              <xsl:if test="$element != ''"><element><xsl:value-of select="$element"/></element></xsl:if>
              <message><xsl:value-of select="message"/></message>
            </problem>
          </xsl:for-each>
        </problems>
      </body>
    </response>
  </xsl:template>

  <!-- Parts -->

  <xsl:template name="head">
    <xsl:param name="result"/>
    <xsl:param name="message"/>
    <xsl:param name="error"/>
    <head>
      <version>2000</version>
      <functionNo><xsl:value-of select="$code"/></functionNo>
      <xsl:choose>
        <xsl:when test="$message_id != ''"><msgId><xsl:value-of select="$message_id"/></msgId></xsl:when>
        <xsl:when test="string(request/transaction_id) != ''"><msgId><xsl:value-of select="request/transaction_id"/></msgId></xsl:when>
      </xsl:choose>
      <resultCode><xsl:value-of select="$result"/></resultCode>
      <resultMessage><xsl:value-of select="$message"/></resultMessage>
      <errorCode><xsl:value-of select="$error"/></errorCode>
    </head>
  </xsl:template>

  <xsl:template name="name">
    <xsl:if test="string(request/claim/patient/name) != ''">
      <D504_02><xsl:value-of select="request/claim/patient/name"/></D504_02>
    </xsl:if>
  </xsl:template>

  <!-- Every fund's share and what the patient pays, all copied from the engine's decimal strings. -->
  <xsl:template name="shares">
    <D504_14><xsl:value-of select="total"/></D504_14>
    <D504_20><xsl:value-of select="derived/fully_self_paid"/></D504_20>
    <D504_21><xsl:value-of select="pre_self_pay"/></D504_21>
    <D504_22><xsl:value-of select="in_scope"/></D504_22>
    <D504_23><xsl:value-of select="derived/group_totals/basic"/></D504_23>
    <D504_24><xsl:value-of select="derived/group_totals/critical_illness"/></D504_24>
    <D504_25><xsl:value-of select="derived/group_totals/assistance"/></D504_25>
    <D504_26><xsl:value-of select="derived/group_totals/guarantee"/></D504_26>
    <D504_27><xsl:value-of select="derived/group_totals/other"/></D504_27>
    <D504_28><xsl:value-of select="derived/funds_paid"/></D504_28>
    <D504_29><xsl:value-of select="patient_pays"/></D504_29>
    <categories>
      <xsl:for-each select="categories/item"><category><code><xsl:value-of select="."/></code></category></xsl:for-each>
    </categories>
    <funds>
      <xsl:for-each select="derived/fund_totals/entry">
        <fund><code><xsl:value-of select="@key"/></code><paid><xsl:value-of select="."/></paid></fund>
      </xsl:for-each>
    </funds>
    <D506_list>
      <xsl:for-each select="lines/item">
        <D506>
          <D506_01><xsl:value-of select="id"/></D506_01>
          <D506_02><xsl:value-of select="code"/></D506_02>
          <D506_06><xsl:value-of select="amount"/></D506_06>
          <D506_07><xsl:value-of select="class"/></D506_07>
          <D506_08><xsl:value-of select="out_of_catalogue"/></D506_08>
          <D506_09><xsl:value-of select="over_price_limit"/></D506_09>
          <D506_10><xsl:value-of select="pre_self_pay"/></D506_10>
          <D506_11><xsl:value-of select="in_scope"/></D506_11>
          <xsl:if test="string(price_cap) != ''"><D506_12><xsl:value-of select="price_cap"/></D506_12></xsl:if>
        </D506>
      </xsl:for-each>
    </D506_list>
  </xsl:template>

  <!-- The message element a problem's canonical path points at: claim.visit.admission_date -> D504_10,
       lines[2].amount or claim.lines.2.amount -> D506_list/D506[3]/D506_06 (positions count from 1). -->
  <xsl:template name="element-of">
    <xsl:param name="path"/>
    <xsl:variable name="p">
      <xsl:choose>
        <xsl:when test="starts-with($path, 'claim.')"><xsl:value-of select="substring-after($path, 'claim.')"/></xsl:when>
        <xsl:otherwise><xsl:value-of select="$path"/></xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <xsl:choose>
      <xsl:when test="$p = 'hospital.code'">head/healthcareprovider/@identity</xsl:when>
      <xsl:when test="$p = 'hospital.level'">D504_08</xsl:when>
      <xsl:when test="$p = 'visit.id'">D504_09</xsl:when>
      <xsl:when test="$p = 'visit.type'">D504_12</xsl:when>
      <xsl:when test="$p = 'visit.admission_date'">D504_10</xsl:when>
      <xsl:when test="$p = 'visit.discharge_date'">D504_11</xsl:when>
      <xsl:when test="$p = 'visit.settled_at'">D504_13</xsl:when>
      <xsl:when test="$p = 'patient.id_number' or $p = 'id_number'">D504_05</xsl:when>
      <xsl:when test="$p = 'patient.name'">D504_02</xsl:when>
      <xsl:when test="$p = 'patient.scheme'">D504_07</xsl:when>
      <xsl:when test="$p = 'patient.region'">D504_06</xsl:when>
      <xsl:when test="$p = 'total'">D504_14</xsl:when>
      <xsl:when test="$p = 'on'">D504_15</xsl:when>
      <xsl:when test="$p = 'settlement_id'">D504_16</xsl:when>
      <xsl:when test="$p = 'quote_id'">D504_17</xsl:when>
      <xsl:when test="$p = 'reason'">D504_18</xsl:when>
      <xsl:when test="$p = 'original_transaction_id'">D504_19</xsl:when>
      <xsl:when test="$p = 'transaction_id'">head/msgId</xsl:when>
      <xsl:when test="$p = 'lines'">D506_list</xsl:when>
      <xsl:when test="starts-with($p, 'lines[') or starts-with($p, 'lines.')">
        <xsl:variable name="rest" select="substring($p, 7)"/>
        <xsl:variable name="index">
          <xsl:choose>
            <xsl:when test="starts-with($p, 'lines[')"><xsl:value-of select="substring-before($rest, ']')"/></xsl:when>
            <xsl:when test="contains($rest, '.')"><xsl:value-of select="substring-before($rest, '.')"/></xsl:when>
            <xsl:otherwise><xsl:value-of select="$rest"/></xsl:otherwise>
          </xsl:choose>
        </xsl:variable>
        <xsl:variable name="field" select="substring-after($rest, '.')"/>
        <!-- a line's position, a small whole number: the only arithmetic in this mapping, and never money -->
        <xsl:value-of select="concat('D506_list/D506[', format-number($index + 1, '0'), ']')"/>
        <xsl:choose>
          <xsl:when test="$field = 'id'">/D506_01</xsl:when>
          <xsl:when test="$field = 'code'">/D506_02</xsl:when>
          <xsl:when test="$field = 'name'">/D506_03</xsl:when>
          <xsl:when test="$field = 'unit_price'">/D506_04</xsl:when>
          <xsl:when test="$field = 'quantity'">/D506_05</xsl:when>
          <xsl:when test="$field = 'amount'">/D506_06</xsl:when>
        </xsl:choose>
      </xsl:when>
    </xsl:choose>
  </xsl:template>

  <xsl:template name="scheme-code">
    <xsl:param name="scheme"/>
    <xsl:choose>
      <xsl:when test="$scheme = 'resident'">390</xsl:when>
      <xsl:when test="$scheme = 'employee'">310</xsl:when>
      <xsl:otherwise><xsl:value-of select="$scheme"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template name="flag">
    <xsl:param name="value"/>
    <xsl:choose>
      <xsl:when test="string($value) = 'true'">1</xsl:when>
      <xsl:otherwise>0</xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
