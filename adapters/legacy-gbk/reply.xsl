<?xml version="1.0" encoding="UTF-8"?>
<!-- The canonical result (settlement.soap.canonical) to the legacy-gbk dialect's <output>, which the service sends
     as the CallServiceReturn string (declaring GBK). Every reply starts with prm_appcode and prm_appmsg: 0 success;
     -1 a failure the hospital must correct or accept (status 4xx); -2 the service failed or was busy (status 5xx:
     send the same call again, same prm_msgid). Failures (the manifest says errors: reply) add prm_errcode, the
     stable code REST also gives.

     Money is never computed here (XPath 1.0 numbers are floating point): every amount is a decimal string copied
     from the canonical result, the sums from its <derived> element (Decimal sums made by the service). Echoes of
     what the hospital sent (name, ID number, handling time) come from the canonical request under <request>.

     Element codes of <output>:
       prm_appcode 0 / -1 / -2   prm_appmsg 成功 / "[CODE] detail"        prm_errcode the stable error code
       prm_msgid the call's message id (every reply, when the hospital sent one)   prm_yka103 settlement id
       prm_omsgid the original message id: of the cancelled call (44), of the settlement (09)
       prm_akc190 visit number   prm_aac002 ID number (eligibility: masked)        prm_aac003 name
       prm_aae036 handling time YYYYMMDDHHMMSS (echo)   prm_status settled | reversed | cancelled_before_arrival |
                                                         nothing_settled          prm_recordtime recorded (ISO)
       prm_replayed 1 when the answer is the stored answer to an earlier call with the same message id
       prm_yka055 total                      prm_yka056 fully self-paid (out of catalogue + over the price limit)
       prm_akc228 out of catalogue           prm_akc268 over the price limit      prm_yka057 self-paid first
       prm_yka111 in scope                   prm_yka058 deductible applied by the basic layer
       prm_yka248 basic fund (310100, 390100)                 prm_yka062 critical illness insurance (390200)
       prm_yka901 medical assistance (610100, 610102, 610103) prm_yka902 government guarantee (640100)
       prm_yka903 other funds                prm_yka904 all funds together        prm_akb067 the patient's share
       prm_reversalid reversal id            prm_quoteid, prm_quoteexp quote id (for 41) and its expiry
       funddetail/row: prm_fundtype fund code, prm_fundpay paid by the fund
       paydetail/row: one payer layer (prm_layer, prm_fundtype, prm_fundname, prm_eligible 1/0, prm_base,
                      prm_deductible, prm_fundpay, prm_summary)
       feedetail/row: one line (prm_yka105 line id, prm_ake001, prm_aka065 class, prm_akc227 amount, prm_akc228,
                      prm_akc268, prm_akc253 self-paid first, prm_yka111, prm_aka068 price cap, prm_share)
       eligibility: prm_inroster 1/0, prm_aae140 390 / 310, prm_aab301 region, prm_querydate YYYYMMDD,
                    categories/row (prm_catcode, prm_catname, prm_aae030 from, prm_aae031 to), prm_year,
                    prm_admissions, ytddetail/row (prm_fundtype, prm_fundpay paid, prm_fundcum cumulative,
                    prm_funddeduct deductible used) -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="code"/>
  <xsl:param name="message_id"/>

  <!-- Failures: prm_appcode -1 (4xx: correct the request) or -2 (5xx: retry with the same prm_msgid) -->
  <xsl:template match="/error">
    <output>
      <prm_appcode>
        <xsl:choose>
          <xsl:when test="@status >= 500">-2</xsl:when>
          <xsl:otherwise>-1</xsl:otherwise>
        </xsl:choose>
      </prm_appcode>
      <prm_appmsg><xsl:value-of select="concat('[', code, '] ', detail)"/></prm_appmsg>
      <prm_errcode><xsl:value-of select="code"/></prm_errcode>
      <xsl:choose>
        <xsl:when test="$message_id != ''"><prm_msgid><xsl:value-of select="$message_id"/></prm_msgid></xsl:when>
        <xsl:when test="request/transaction_id != ''">
          <prm_msgid><xsl:value-of select="request/transaction_id"/></prm_msgid>
        </xsl:when>
      </xsl:choose>
      <prm_replayed><xsl:call-template name="flag"><xsl:with-param name="value" select="@replayed"/></xsl:call-template></prm_replayed>
      <xsl:if test="problems/item">
        <problems>
          <xsl:for-each select="problems/item">
            <row>
              <prm_errcode><xsl:value-of select="code"/></prm_errcode>
              <prm_errpath><xsl:value-of select="path"/></prm_errpath>
              <prm_errmsg><xsl:value-of select="message"/></prm_errmsg>
            </row>
          </xsl:for-each>
        </problems>
      </xsl:if>
    </output>
  </xsl:template>

  <!-- 03 eligibility -->
  <xsl:template match="/result[@operation='eligibility']">
    <output>
      <xsl:call-template name="success"/>
      <xsl:call-template name="message-id"/>
      <prm_aac002><xsl:value-of select="person"/></prm_aac002>
      <prm_inroster><xsl:call-template name="flag"><xsl:with-param name="value" select="in_roster"/></xsl:call-template></prm_inroster>
      <xsl:if test="scheme != ''">
        <prm_aae140><xsl:call-template name="scheme"><xsl:with-param name="value" select="scheme"/></xsl:call-template></prm_aae140>
      </xsl:if>
      <xsl:if test="region != ''"><prm_aab301><xsl:value-of select="region"/></prm_aab301></xsl:if>
      <prm_querydate><xsl:value-of select="translate(on, '-', '')"/></prm_querydate>
      <categories>
        <xsl:for-each select="categories/item">
          <row>
            <prm_catcode><xsl:value-of select="code"/></prm_catcode>
            <prm_catname><xsl:value-of select="name"/></prm_catname>
            <prm_aae030><xsl:value-of select="translate(valid_from, '-', '')"/></prm_aae030>
            <xsl:if test="valid_to != ''"><prm_aae031><xsl:value-of select="translate(valid_to, '-', '')"/></prm_aae031></xsl:if>
          </row>
        </xsl:for-each>
      </categories>
      <prm_year><xsl:value-of select="year_to_date/year"/></prm_year>
      <prm_admissions><xsl:value-of select="year_to_date/admissions"/></prm_admissions>
      <ytddetail>
        <xsl:for-each select="year_to_date/paid/entry">
          <xsl:variable name="fund" select="@key"/>
          <row>
            <prm_fundtype><xsl:value-of select="$fund"/></prm_fundtype>
            <prm_fundpay><xsl:value-of select="."/></prm_fundpay>
            <xsl:if test="../../cumulative/entry[@key = $fund]">
              <prm_fundcum><xsl:value-of select="../../cumulative/entry[@key = $fund]"/></prm_fundcum>
            </xsl:if>
            <xsl:if test="../../deductible_used/entry[@key = $fund]">
              <prm_funddeduct><xsl:value-of select="../../deductible_used/entry[@key = $fund]"/></prm_funddeduct>
            </xsl:if>
          </row>
        </xsl:for-each>
      </ytddetail>
    </output>
  </xsl:template>

  <!-- 43 pre-settlement -->
  <xsl:template match="/result[@operation='quote']">
    <output>
      <xsl:call-template name="success"/>
      <xsl:call-template name="message-id"/>
      <xsl:call-template name="patient-echo"/>
      <xsl:call-template name="shares"/>
      <prm_quoteid><xsl:value-of select="quote_id"/></prm_quoteid>
      <prm_quoteexp><xsl:value-of select="expires_at"/></prm_quoteexp>
      <xsl:call-template name="details"/>
    </output>
  </xsl:template>

  <!-- 41 settlement and 09 settlement query -->
  <xsl:template match="/result[@operation='settle' or @operation='get']">
    <output>
      <xsl:call-template name="success"/>
      <xsl:choose>
        <xsl:when test="@operation = 'settle'"><prm_msgid><xsl:value-of select="transaction_id"/></prm_msgid></xsl:when>
        <xsl:otherwise>
          <xsl:call-template name="message-id"/>
          <prm_omsgid><xsl:value-of select="transaction_id"/></prm_omsgid>
        </xsl:otherwise>
      </xsl:choose>
      <prm_yka103><xsl:value-of select="settlement_id"/></prm_yka103>
      <xsl:call-template name="patient-echo"/>
      <prm_status><xsl:value-of select="status"/></prm_status>
      <prm_recordtime><xsl:value-of select="recorded_at"/></prm_recordtime>
      <prm_replayed><xsl:call-template name="flag"><xsl:with-param name="value" select="@replayed"/></xsl:call-template></prm_replayed>
      <xsl:call-template name="shares"/>
      <xsl:if test="reversal/reversal_id">
        <prm_reversalid><xsl:value-of select="reversal/reversal_id"/></prm_reversalid>
      </xsl:if>
      <xsl:if test="corrections/item">
        <!-- 09: finance's corrections, each moving money between a fund and the patient's share -->
        <correctiondetail>
          <xsl:for-each select="corrections/item">
            <row>
              <prm_correctionid><xsl:value-of select="correction_id"/></prm_correctionid>
              <prm_fundtype><xsl:value-of select="fund"/></prm_fundtype>
              <prm_fundpay><xsl:value-of select="amount"/></prm_fundpay>
              <prm_akb067><xsl:value-of select="patient_pays"/></prm_akb067>
              <prm_recordtime><xsl:value-of select="recorded_at"/></prm_recordtime>
            </row>
          </xsl:for-each>
        </correctiondetail>
      </xsl:if>
      <xsl:call-template name="details"/>
    </output>
  </xsl:template>

  <!-- 42 settlement rollback and 44 cancellation of an uncertain call -->
  <xsl:template match="/result[@operation='reverse' or @operation='cancel']">
    <output>
      <xsl:call-template name="success"/>
      <prm_msgid><xsl:value-of select="transaction_id"/></prm_msgid>
      <xsl:choose>
        <xsl:when test="original_transaction_id != ''">
          <prm_omsgid><xsl:value-of select="original_transaction_id"/></prm_omsgid>
        </xsl:when>
        <xsl:when test="request/original_transaction_id != ''">
          <prm_omsgid><xsl:value-of select="request/original_transaction_id"/></prm_omsgid>
        </xsl:when>
      </xsl:choose>
      <prm_status><xsl:value-of select="status"/></prm_status>
      <prm_recordtime><xsl:value-of select="recorded_at"/></prm_recordtime>
      <prm_replayed><xsl:call-template name="flag"><xsl:with-param name="value" select="@replayed"/></xsl:call-template></prm_replayed>
      <xsl:if test="reversal_id != ''">
        <prm_reversalid><xsl:value-of select="reversal_id"/></prm_reversalid>
        <prm_yka103><xsl:value-of select="settlement_id"/></prm_yka103>
        <prm_yka055><xsl:value-of select="total"/></prm_yka055>
        <prm_akb067><xsl:value-of select="patient_pays"/></prm_akb067>
        <funddetail>
          <xsl:for-each select="entries/item">
            <row>
              <prm_fundtype><xsl:value-of select="fund"/></prm_fundtype>
              <prm_fundpay><xsl:value-of select="paid"/></prm_fundpay>
            </row>
          </xsl:for-each>
        </funddetail>
      </xsl:if>
    </output>
  </xsl:template>

  <xsl:template name="success">
    <prm_appcode>0</prm_appcode>
    <prm_appmsg>成功</prm_appmsg>
  </xsl:template>

  <!-- The caller's prm_msgid (the manifest's message.message_id), for operations without a key. -->
  <xsl:template name="message-id">
    <xsl:if test="$message_id != ''"><prm_msgid><xsl:value-of select="$message_id"/></prm_msgid></xsl:if>
  </xsl:template>

  <!-- What the hospital sent about the patient and the visit, echoed from the canonical request. -->
  <xsl:template name="patient-echo">
    <xsl:variable name="claim" select="request/claim"/>
    <xsl:choose>
      <xsl:when test="visit_id != ''"><prm_akc190><xsl:value-of select="visit_id"/></prm_akc190></xsl:when>
      <xsl:when test="$claim/visit/id != ''"><prm_akc190><xsl:value-of select="$claim/visit/id"/></prm_akc190></xsl:when>
    </xsl:choose>
    <xsl:if test="$claim/patient/id_number != ''">
      <prm_aac002><xsl:value-of select="$claim/patient/id_number"/></prm_aac002>
    </xsl:if>
    <xsl:if test="$claim/patient/name != ''">
      <prm_aac003><xsl:value-of select="$claim/patient/name"/></prm_aac003>
    </xsl:if>
    <xsl:if test="$claim/visit/settled_at != ''">
      <!-- 2024-03-12T10:15:00+08:00 back to 20240312101500 -->
      <prm_aae036><xsl:value-of select="substring(translate($claim/visit/settled_at, '-T:', ''), 1, 14)"/></prm_aae036>
    </xsl:if>
  </xsl:template>

  <!-- The split of a bill: every figure copied, sums from <derived>. -->
  <xsl:template name="shares">
    <xsl:variable name="basic" select="payers/item[eligible = 'true'][fund = '390100' or fund = '310100'][1]"/>
    <prm_yka055><xsl:value-of select="total"/></prm_yka055>
    <prm_yka056><xsl:value-of select="derived/fully_self_paid"/></prm_yka056>
    <prm_akc228><xsl:value-of select="out_of_catalogue"/></prm_akc228>
    <prm_akc268><xsl:value-of select="over_price_limit"/></prm_akc268>
    <prm_yka057><xsl:value-of select="pre_self_pay"/></prm_yka057>
    <prm_yka111><xsl:value-of select="in_scope"/></prm_yka111>
    <prm_yka058>
      <xsl:choose>
        <xsl:when test="$basic"><xsl:value-of select="$basic/deductible"/></xsl:when>
        <xsl:otherwise>0.00</xsl:otherwise>
      </xsl:choose>
    </prm_yka058>
    <prm_yka248><xsl:value-of select="derived/group_totals/basic"/></prm_yka248>
    <prm_yka062><xsl:value-of select="derived/group_totals/critical_illness"/></prm_yka062>
    <prm_yka901><xsl:value-of select="derived/group_totals/assistance"/></prm_yka901>
    <prm_yka902><xsl:value-of select="derived/group_totals/guarantee"/></prm_yka902>
    <prm_yka903><xsl:value-of select="derived/group_totals/other"/></prm_yka903>
    <prm_yka904><xsl:value-of select="derived/funds_paid"/></prm_yka904>
    <prm_akb067><xsl:value-of select="patient_pays"/></prm_akb067>
  </xsl:template>

  <!-- Per fund, per payer layer and per line. -->
  <xsl:template name="details">
    <prm_tariffarea><xsl:value-of select="tariff/region"/></prm_tariffarea>
    <prm_tariffver><xsl:value-of select="tariff/version"/></prm_tariffver>
    <categories>
      <xsl:for-each select="categories/item"><row><prm_catcode><xsl:value-of select="."/></prm_catcode></row></xsl:for-each>
    </categories>
    <funddetail>
      <xsl:for-each select="derived/fund_totals/entry">
        <row>
          <prm_fundtype><xsl:value-of select="@key"/></prm_fundtype>
          <prm_fundpay><xsl:value-of select="."/></prm_fundpay>
        </row>
      </xsl:for-each>
    </funddetail>
    <paydetail>
      <xsl:for-each select="payers/item">
        <row>
          <prm_layer><xsl:value-of select="layer"/></prm_layer>
          <prm_fundtype><xsl:value-of select="fund"/></prm_fundtype>
          <prm_fundname><xsl:value-of select="name"/></prm_fundname>
          <prm_eligible><xsl:call-template name="flag"><xsl:with-param name="value" select="eligible"/></xsl:call-template></prm_eligible>
          <prm_base><xsl:value-of select="base"/></prm_base>
          <prm_deductible><xsl:value-of select="deductible"/></prm_deductible>
          <prm_fundpay><xsl:value-of select="paid"/></prm_fundpay>
          <prm_summary><xsl:value-of select="summary"/></prm_summary>
        </row>
      </xsl:for-each>
    </paydetail>
    <feedetail>
      <xsl:for-each select="lines/item">
        <row>
          <prm_yka105><xsl:value-of select="id"/></prm_yka105>
          <prm_ake001><xsl:value-of select="code"/></prm_ake001>
          <prm_aka065><xsl:value-of select="class"/></prm_aka065>
          <prm_akc227><xsl:value-of select="amount"/></prm_akc227>
          <prm_akc228><xsl:value-of select="out_of_catalogue"/></prm_akc228>
          <prm_akc268><xsl:value-of select="over_price_limit"/></prm_akc268>
          <prm_akc253><xsl:value-of select="pre_self_pay"/></prm_akc253>
          <prm_yka111><xsl:value-of select="in_scope"/></prm_yka111>
          <xsl:if test="price_cap != ''"><prm_aka068><xsl:value-of select="price_cap"/></prm_aka068></xsl:if>
          <xsl:if test="share != ''"><prm_share><xsl:value-of select="share"/></prm_share></xsl:if>
        </row>
      </xsl:for-each>
    </feedetail>
  </xsl:template>

  <xsl:template name="flag">
    <xsl:param name="value"/>
    <xsl:choose>
      <xsl:when test="$value = 'true'">1</xsl:when>
      <xsl:otherwise>0</xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template name="scheme">
    <xsl:param name="value"/>
    <xsl:choose>
      <xsl:when test="$value = 'resident'">390</xsl:when>
      <xsl:when test="$value = 'employee'">310</xsl:when>
      <xsl:otherwise><xsl:value-of select="$value"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
